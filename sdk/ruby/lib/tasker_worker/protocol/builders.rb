# frozen_string_literal: true

require "json"

module TaskerWorker
  module Protocol
    # Builders of the messages a worker sends, filling in the envelope, list defaults, derived
    # fields (a partial result's `status`, a completion's counts) and fitting free text into the
    # protocol's limits (spec §3.5: a long error must never make a result undeliverable).
    module Builders
      module_function

      # The `sdk` object this SDK announces.
      def sdk_info
        SdkInfo.new(name: SDK_NAME, version: TaskerWorker::VERSION, language: SDK_LANGUAGE)
      end

      def hello(worker_id:, name:, handler_classes:, capacity:, heartbeat_interval_ms: nil, in_flight: [],
                sdk: sdk_info)
        Hello.new(protocol_version: VERSION, worker_id: worker_id, name: name, sdk: sdk,
                  handler_classes: handler_classes, capacity: capacity,
                  heartbeat_interval_ms: heartbeat_interval_ms, in_flight: in_flight)
      end

      def heartbeat(worker_id:, in_flight:, free_capacity:, timestamp: Timestamp.now)
        WorkerHeartbeat.new(protocol_version: VERSION, worker_id: worker_id, in_flight: in_flight,
                            free_capacity: free_capacity, timestamp: timestamp)
      end

      # A step error with its text fitted to the limits.
      def step_error(message:, error_class:, retryable:, retry_after_ms: nil, backtrace: [])
        StepError.new(
          message: Protocol.truncate_to_bytes(message, MAX_TEXT_BYTES),
          error_class: Protocol.truncate_to_bytes(error_class, MAX_NAME_BYTES),
          retryable: retryable ? true : false,
          retry_after_ms: retry_after_ms,
          backtrace: Array(backtrace).first(MAX_BACKTRACE_ENTRIES)
                                     .map { |line| Protocol.truncate_to_bytes(line, MAX_BACKTRACE_ENTRY_BYTES) }
        )
      end

      # A partial result: `completed` with `output` when `error` is nil, else `failed` with a
      # null output.
      def partial_result(batch_id:, step_id:, attempt:, worker_id:, sequence:, execution_time_ms:,
                         output: nil, error: nil, timestamp: Timestamp.now)
        PartialResult.new(protocol_version: VERSION, batch_id: batch_id, step_id: step_id, attempt: attempt,
                          status: error ? "failed" : "completed", output: error ? nil : output, error: error,
                          worker_id: worker_id, sequence: sequence, timestamp: timestamp,
                          execution_time_ms: execution_time_ms)
      end

      # A batch completion from its summaries (in batch order); the counts are derived.
      def batch_completion(batch_id:, step_summaries:, worker_id:, completed_at: Timestamp.now)
        completed = step_summaries.count { |summary| summary.status == "completed" }
        BatchCompletion.new(protocol_version: VERSION, batch_id: batch_id, total_steps: step_summaries.length,
                            completed_steps: completed, failed_steps: step_summaries.length - completed,
                            step_summaries: step_summaries, completed_at: completed_at, worker_id: worker_id)
      end

      def health_reply(request_id:, worker_id:, status:, in_flight:, free_capacity:, uptime_ms:, details: nil)
        HealthReply.new(protocol_version: VERSION, request_id: request_id, worker_id: worker_id, status: status,
                        in_flight: in_flight, free_capacity: free_capacity, uptime_ms: uptime_ms, details: details)
      end

      def goodbye(worker_id:, reason:, handed_back: [])
        Goodbye.new(protocol_version: VERSION, worker_id: worker_id,
                    reason: Protocol.truncate_to_bytes(reason, MAX_TEXT_BYTES), handed_back: handed_back)
      end

      def error_report(code:, message:, offending_message_type: nil, batch_id: nil, step_id: nil)
        ErrorReport.new(protocol_version: VERSION, code: code,
                        message: Protocol.truncate_to_bytes(message, MAX_TEXT_BYTES),
                        offending_message_type: offending_message_type &&
                                                Protocol.truncate_to_bytes(offending_message_type, MAX_NAME_BYTES),
                        batch_id: batch_id, step_id: step_id)
      end

      # The `error` a worker sends back for an orchestrator frame rejected with `decode_error`,
      # naming what could be read from the frame's top level (spec §11); nil when the frame was
      # itself an `error` (errors are never answered).
      def rejection_report(frame, decode_error)
        offending = Rejection.peek(frame, decode_error)
        return nil if offending[:message_type] == "error"

        error_report(code: decode_error.code, message: decode_error.message,
                     offending_message_type: offending[:message_type],
                     batch_id: offending[:batch_id], step_id: offending[:step_id])
      end
    end

    # What can be read from a rejected frame to name it in the `error` reply.
    module Rejection
      module_function

      # `{message_type:, batch_id:, step_id:}` read from the frame's top level; all nil for
      # frames rejected before they could be parsed into an object.
      def peek(frame, decode_error)
        empty = { message_type: nil, batch_id: nil, step_id: nil }
        return empty if decode_error.unparsed?

        object = FrameParser.parse_object(frame, Limits.new(max_frame_bytes: Float::INFINITY,
                                                            max_steps_per_batch: MAX_STEPS_PER_BATCH_CEILING))
        message_type = object["message_type"]
        batch_id = object["batch_id"]
        step_id = object["step_id"]
        {
          message_type: message_type.is_a?(String) ? Protocol.truncate_to_bytes(message_type, MAX_NAME_BYTES) : nil,
          batch_id: batch_id.is_a?(String) && LOWERCASE_UUID_PATTERN.match?(batch_id) ? batch_id : nil,
          step_id: step_id.is_a?(Integer) && step_id.between?(1, I64_MAX) ? step_id : nil
        }
      rescue DecodeError
        empty
      end
    end

    module_function

    # The frame (compact JSON text, UTF-8) of a message. Raises JSON::GeneratorError for values
    # JSON cannot carry (NaN, Infinity, strings that are not valid UTF-8).
    def encode(message)
      JSON.generate(message.to_wire)
    end

    # Decodes a frame received from the orchestrator. See Decoder.
    def decode_orchestrator_message(frame, limits = Limits.default)
      Decoder.decode_orchestrator_message(frame, limits)
    end

    # Decodes a frame received from a worker. See Decoder.
    def decode_worker_message(frame, limits = Limits.default)
      Decoder.decode_worker_message(frame, limits)
    end
  end
end

# frozen_string_literal: true

module TaskerWorker
  module Protocol
    # Frame → message, in the validation order of spec §6.1 (the same order, codes and field
    # paths as the Rust crate `tasker-protocol`, whose decoder is authoritative): size, UTF-8,
    # nesting, JSON, object, `protocol_version`, `message_type`, the fields in table order
    # (depth first), then cross-field consistency.
    module Decoder
      WORKER_TO_ORCHESTRATOR = "worker-to-orchestrator"
      ORCHESTRATOR_TO_WORKER = "orchestrator-to-worker"

      module_function

      # Decodes a frame received from the orchestrator (what a worker does).
      def decode_orchestrator_message(frame, limits = Limits.default)
        fields, version, message_type = read_envelope(frame, limits)
        case message_type
        when "welcome" then read_welcome(fields, version)
        when "hello_rejected" then read_hello_rejected(fields, version)
        when "heartbeat" then read_orchestrator_heartbeat(fields, version)
        when "step_batch" then read_step_batch(fields, version, limits)
        when "result_ack" then read_result_ack(fields, version)
        when "cancel_steps" then read_cancel_steps(fields, version, limits)
        when "health_request" then read_health_request(fields, version)
        when "error" then read_error_report(fields, version)
        else raise DecodeError.unknown_message_type(message_type, ORCHESTRATOR_TO_WORKER)
        end
      end

      # Decodes a frame received from a worker (what an orchestrator does; this SDK's tests use
      # it to check every frame the worker sends).
      def decode_worker_message(frame, limits = Limits.default)
        fields, version, message_type = read_envelope(frame, limits)
        case message_type
        when "hello" then read_hello(fields, version)
        when "heartbeat" then read_worker_heartbeat(fields, version)
        when "partial_result" then read_partial_result(fields, version)
        when "batch_completion" then read_batch_completion(fields, version, limits)
        when "health_reply" then read_health_reply(fields, version)
        when "goodbye" then read_goodbye(fields, version)
        when "error" then read_error_report(fields, version)
        else raise DecodeError.unknown_message_type(message_type, WORKER_TO_ORCHESTRATOR)
        end
      end

      # Whether `text` is a well-formed `major.minor` version: two decimal numbers without sign
      # or leading zeros, each fitting in 32 bits. Returns [major, minor] or nil.
      def parse_version(text)
        match = /\A(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\z/.match(text)
        return nil unless match

        parts = match.captures.map { |part| Integer(part, 10) }
        parts.all? { |part| part <= U32_MAX } ? parts : nil
      end

      # Steps 1–7: the frame as an object, its version (checked before the type, so a message of
      # another major version is never reported as a field error) and its message_type.
      def read_envelope(frame, limits)
        fields = FieldReader.new(FrameParser.parse_object(frame, limits))
        version_field = fields.required("protocol_version")
        version = version_field.text(:label)
        major, = parse_version(version)
        unless major
          raise DecodeError.invalid_field_value(
            "protocol_version", "\"#{version}\" is not of the form <major>.<minor>, e.g. \"1.0\""
          )
        end
        raise DecodeError.unsupported_version(version) unless major == MAJOR_VERSION

        [fields, version, fields.required("message_type").text(:label)]
      end

      # ----- worker → orchestrator -----

      def read_hello(fields, version)
        worker_id = fields.required("worker_id").text(:identifier)
        name = fields.required("name").text(:name)
        sdk_fields = fields.required("sdk").object
        sdk = SdkInfo.new(
          name: sdk_fields.required("name").text(:name),
          version: sdk_fields.required("version").text(:name),
          language: sdk_fields.required("language").text(:name)
        )
        handler_classes = Protocol.read_distinct(
          fields.required("handler_classes").array(MAX_HANDLER_CLASSES, non_empty: true), key: :itself.to_proc
        ) { |item| item.text(:name) }
        capacity = fields.required("capacity").integer(1, MAX_CAPACITY)
        heartbeat_interval_ms = fields.optional("heartbeat_interval_ms")
                                      &.integer(MIN_HEARTBEAT_INTERVAL_MS, MAX_HEARTBEAT_INTERVAL_MS)
        Hello.new(protocol_version: version, worker_id: worker_id, name: name, sdk: sdk,
                  handler_classes: handler_classes, capacity: capacity,
                  heartbeat_interval_ms: heartbeat_interval_ms, in_flight: read_step_refs(fields, "in_flight"))
      end

      # An optional list of distinct step references (absent or null: empty).
      def read_step_refs(fields, name)
        field = fields.optional(name)
        return [] unless field

        Protocol.read_distinct(field.array(Float::INFINITY), key: ->(ref) { [ref.batch_id, ref.step_id] },
                                                              &:step_ref)
      end

      def read_worker_heartbeat(fields, version)
        WorkerHeartbeat.new(
          protocol_version: version,
          worker_id: fields.required("worker_id").text(:identifier),
          in_flight: fields.required("in_flight").count,
          free_capacity: fields.required("free_capacity").count,
          timestamp: fields.required("timestamp").timestamp
        )
      end

      def read_partial_result(fields, version)
        batch_id = fields.required("batch_id").uuid
        step_id = fields.required("step_id").id
        attempt = fields.required("attempt").integer(1, U32_MAX)
        status = fields.required("status").one_of(STEP_STATUSES)
        output = fields.optional("output")&.value
        error = fields.optional("error")&.then { |field| read_step_error(field) }
        worker_id = fields.required("worker_id").text(:identifier)
        sequence = fields.required("sequence").integer(1, I64_MAX)
        timestamp = fields.required("timestamp").timestamp
        execution_time_ms = fields.required("execution_time_ms").millis

        if status == "completed" && error
          raise DecodeError.inconsistent("error", "must be null when status is \"completed\"")
        end
        if status == "failed"
          raise DecodeError.inconsistent("error", "is required when status is \"failed\"") unless error
          raise DecodeError.inconsistent("output", "must be null when status is \"failed\"") unless output.nil?
        end

        PartialResult.new(protocol_version: version, batch_id: batch_id, step_id: step_id, attempt: attempt,
                          status: status, output: output, error: error, worker_id: worker_id, sequence: sequence,
                          timestamp: timestamp, execution_time_ms: execution_time_ms)
      end

      def read_step_error(field)
        fields = field.object
        message = fields.required("message").text(:prose)
        error_class = fields.required("error_class").text(:name)
        retryable = fields.required("retryable").boolean
        retry_after_ms = fields.optional("retry_after_ms")&.millis
        backtrace_field = fields.optional("backtrace")
        backtrace = backtrace_field ? backtrace_field.array(MAX_BACKTRACE_ENTRIES).map { |item| item.text(:backtrace_entry) } : []
        StepError.new(message: message, error_class: error_class, retryable: retryable,
                      retry_after_ms: retry_after_ms, backtrace: backtrace)
      end

      def read_batch_completion(fields, version, limits)
        batch_id = fields.required("batch_id").uuid
        total_steps = fields.required("total_steps").integer(1, U32_MAX)
        completed_steps = fields.required("completed_steps").count
        failed_steps = fields.required("failed_steps").count
        summaries = Protocol.read_distinct(
          fields.required("step_summaries").array(limits.max_steps_per_batch),
          key: :step_id.to_proc, duplicate_path: ->(item) { "#{item.path}.step_id" }
        ) do |item|
          summary = item.object
          StepSummary.new(step_id: summary.required("step_id").id,
                          status: summary.required("status").one_of(STEP_STATUSES))
        end
        completed_at = fields.required("completed_at").timestamp
        worker_id = fields.required("worker_id").text(:identifier)

        if completed_steps + failed_steps != total_steps
          raise DecodeError.inconsistent(
            "total_steps", "is #{total_steps} but completed_steps + failed_steps is #{completed_steps + failed_steps}"
          )
        end
        if summaries.length != total_steps
          raise DecodeError.inconsistent("step_summaries",
                                         "has #{summaries.length} entries but total_steps is #{total_steps}")
        end
        summarized = summaries.count { |summary| summary.status == "completed" }
        if summarized != completed_steps
          raise DecodeError.inconsistent(
            "completed_steps", "is #{completed_steps} but step_summaries has #{summarized} completed entries"
          )
        end

        BatchCompletion.new(protocol_version: version, batch_id: batch_id, total_steps: total_steps,
                            completed_steps: completed_steps, failed_steps: failed_steps,
                            step_summaries: summaries, completed_at: completed_at, worker_id: worker_id)
      end

      def read_health_reply(fields, version)
        HealthReply.new(
          protocol_version: version,
          request_id: fields.required("request_id").uuid,
          worker_id: fields.required("worker_id").text(:identifier),
          status: fields.required("status").one_of(WORKER_HEALTH),
          in_flight: fields.required("in_flight").count,
          free_capacity: fields.required("free_capacity").count,
          uptime_ms: fields.required("uptime_ms").millis,
          details: fields.optional("details")&.json_object
        )
      end

      def read_goodbye(fields, version)
        Goodbye.new(
          protocol_version: version,
          worker_id: fields.required("worker_id").text(:identifier),
          reason: fields.required("reason").text(:prose),
          handed_back: read_step_refs(fields, "handed_back")
        )
      end

      # ----- both directions -----

      def read_error_report(fields, version)
        ErrorReport.new(
          protocol_version: version,
          code: fields.required("code").text(:code),
          message: fields.required("message").text(:prose),
          offending_message_type: fields.optional("offending_message_type")&.text(:label),
          batch_id: fields.optional("batch_id")&.uuid,
          step_id: fields.optional("step_id")&.id
        )
      end

      # ----- orchestrator → worker -----

      def read_welcome(fields, version)
        Welcome.new(
          protocol_version: version,
          worker_id: fields.required("worker_id").text(:identifier),
          orchestrator_id: fields.required("orchestrator_id").text(:identifier),
          heartbeat_interval_ms: fields.required("heartbeat_interval_ms")
                                       .integer(MIN_HEARTBEAT_INTERVAL_MS, MAX_HEARTBEAT_INTERVAL_MS),
          liveness: fields.required("liveness").integer(1, MAX_LIVENESS),
          max_frame_bytes: fields.required("max_frame_bytes").integer(MIN_MAX_FRAME_BYTES, MAX_MAX_FRAME_BYTES),
          max_steps_per_batch: fields.required("max_steps_per_batch").integer(1, MAX_STEPS_PER_BATCH_CEILING)
        )
      end

      def read_hello_rejected(fields, version)
        HelloRejected.new(protocol_version: version, code: fields.required("code").text(:code),
                          message: fields.required("message").text(:prose))
      end

      def read_orchestrator_heartbeat(fields, version)
        OrchestratorHeartbeat.new(protocol_version: version,
                                  orchestrator_id: fields.required("orchestrator_id").text(:identifier),
                                  timestamp: fields.required("timestamp").timestamp)
      end

      def read_step_batch(fields, version, limits)
        batch_id = fields.required("batch_id").uuid
        steps = Protocol.read_distinct(
          fields.required("steps").array(limits.max_steps_per_batch, non_empty: true),
          key: :step_id.to_proc, duplicate_path: ->(item) { "#{item.path}.step_id" }
        ) { |item| read_step_request(item) }
        steps.each_with_index do |step, index|
          expected = StepMetadata.idempotency_key_for(step.step_id, step.metadata.attempt)
          next if step.metadata.idempotency_key == expected

          raise DecodeError.inconsistent(
            "steps[#{index}].metadata.idempotency_key",
            "is \"#{Protocol.truncate_to_bytes(step.metadata.idempotency_key, 64)}\" but must be " \
            "\"<step_id>:<attempt>\" = \"#{expected}\""
          )
        end
        StepBatch.new(protocol_version: version, batch_id: batch_id, steps: steps)
      end

      def read_step_request(field)
        fields = field.object
        step_id = fields.required("step_id").id
        task_id = fields.required("task_id").id
        step_name = fields.required("step_name").text(:name)
        handler_class = fields.required("handler_class").text(:name)
        handler_config = fields.required("handler_config").json_object
        task_context = fields.required("task_context").json_object
        previous_results = fields.required("previous_results").json_object
        metadata_fields = fields.required("metadata").object
        metadata = StepMetadata.new(
          attempt: metadata_fields.required("attempt").integer(1, U32_MAX),
          retry_limit: metadata_fields.required("retry_limit").count,
          timeout_ms: metadata_fields.optional("timeout_ms")&.integer(1, I64_MAX),
          idempotency_key: metadata_fields.required("idempotency_key").text(:name)
        )
        StepRequest.new(step_id: step_id, task_id: task_id, step_name: step_name, handler_class: handler_class,
                        handler_config: handler_config, task_context: task_context,
                        previous_results: previous_results, metadata: metadata)
      end

      def read_result_ack(fields, version)
        acks = fields.required("acks").array(Float::INFINITY, non_empty: true).map do |item|
          entry = item.object
          AckEntry.new(
            batch_id: entry.required("batch_id").uuid,
            message_kind: entry.required("message_kind").one_of(RESULT_KINDS),
            step_id: entry.optional("step_id")&.id,
            outcome: entry.required("outcome").one_of(ACK_OUTCOMES)
          )
        end
        acks.each_with_index do |ack, index|
          if ack.message_kind == "partial_result" && ack.step_id.nil?
            raise DecodeError.inconsistent("acks[#{index}].step_id",
                                           "is required when message_kind is \"partial_result\"")
          end
          if ack.message_kind == "batch_completion" && ack.step_id
            raise DecodeError.inconsistent("acks[#{index}].step_id",
                                           "must be null when message_kind is \"batch_completion\"")
          end
        end
        ResultAck.new(protocol_version: version, acks: acks)
      end

      def read_cancel_steps(fields, version, limits)
        CancelSteps.new(
          protocol_version: version,
          batch_id: fields.required("batch_id").uuid,
          step_ids: Protocol.read_distinct(
            fields.required("step_ids").array(limits.max_steps_per_batch, non_empty: true), key: :itself.to_proc, &:id
          ),
          reason: fields.required("reason").one_of(CANCEL_REASONS)
        )
      end

      def read_health_request(fields, version)
        HealthRequest.new(protocol_version: version, request_id: fields.required("request_id").uuid,
                          timestamp: fields.required("timestamp").timestamp)
      end
    end
  end
end

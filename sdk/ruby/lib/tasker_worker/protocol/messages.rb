# frozen_string_literal: true

module TaskerWorker
  module Protocol
    # Conversion of protocol values to their wire form (spec §3.3: every field written, `null`
    # for an optional field without a value, `[]` for an empty list, fields in table order).
    module Wire
      module_function

      def value(item)
        case item
        when Time then Timestamp.format(item)
        when Array then item.map { |entry| value(entry) }
        else item.respond_to?(:to_wire) ? item.to_wire : item
        end
      end
    end

    # A protocol object made of fields in canonical order (nested objects and messages).
    module Record
      # The object as a Hash of wire values, in canonical field order.
      def to_wire
        wire_members.to_h { |name| [name.to_s, Wire.value(self[name])] }
      end

      # The members written on the wire, in canonical order.
      def wire_members
        members
      end
    end

    # A protocol message: the envelope (`message_type`, `protocol_version`) and its fields.
    module Message
      include Record

      # The wire `message_type`.
      def message_type
        self.class::MESSAGE_TYPE
      end

      # Every member but the envelope's `protocol_version`.
      def wire_members
        members.drop(1)
      end

      # The message as a Hash in canonical form, envelope first.
      def to_wire
        { "message_type" => message_type, "protocol_version" => protocol_version || VERSION }.merge(super)
      end
    end

    # Defines a message Struct whose first member is `protocol_version`.
    def self.define_message(message_type, *fields)
      Struct.new(:protocol_version, *fields, keyword_init: true) do
        include Message
        const_set(:MESSAGE_TYPE, message_type)
      end
    end

    def self.define_record(*fields)
      Struct.new(*fields, keyword_init: true) { include Record }
    end

    # `{batch_id, step_id}`: one step of one batch (in `in_flight`, `handed_back`).
    StepRef = define_record(:batch_id, :step_id)
    # `hello.sdk`.
    SdkInfo = define_record(:name, :version, :language)
    # `partial_result.error`.
    StepError = define_record(:message, :error_class, :retryable, :retry_after_ms, :backtrace)
    # `batch_completion.step_summaries[]`.
    StepSummary = define_record(:step_id, :status)
    # `step_batch.steps[].metadata`.
    StepMetadata = define_record(:attempt, :retry_limit, :timeout_ms, :idempotency_key)
    # `step_batch.steps[]`.
    StepRequest = define_record(:step_id, :task_id, :step_name, :handler_class, :handler_config,
                                :task_context, :previous_results, :metadata)
    # `result_ack.acks[]`.
    AckEntry = define_record(:batch_id, :message_kind, :step_id, :outcome)

    # Worker → orchestrator.
    Hello = define_message("hello", :worker_id, :name, :sdk, :handler_classes, :capacity,
                           :heartbeat_interval_ms, :in_flight)
    WorkerHeartbeat = define_message("heartbeat", :worker_id, :in_flight, :free_capacity, :timestamp)
    PartialResult = define_message("partial_result", :batch_id, :step_id, :attempt, :status, :output, :error,
                                   :worker_id, :sequence, :timestamp, :execution_time_ms)
    BatchCompletion = define_message("batch_completion", :batch_id, :total_steps, :completed_steps,
                                     :failed_steps, :step_summaries, :completed_at, :worker_id)
    HealthReply = define_message("health_reply", :request_id, :worker_id, :status, :in_flight,
                                 :free_capacity, :uptime_ms, :details)
    Goodbye = define_message("goodbye", :worker_id, :reason, :handed_back)
    # Both directions.
    ErrorReport = define_message("error", :code, :message, :offending_message_type, :batch_id, :step_id)
    # Orchestrator → worker.
    Welcome = define_message("welcome", :worker_id, :orchestrator_id, :heartbeat_interval_ms, :liveness,
                             :max_frame_bytes, :max_steps_per_batch)
    HelloRejected = define_message("hello_rejected", :code, :message)
    OrchestratorHeartbeat = define_message("heartbeat", :orchestrator_id, :timestamp)
    StepBatch = define_message("step_batch", :batch_id, :steps)
    ResultAck = define_message("result_ack", :acks)
    CancelSteps = define_message("cancel_steps", :batch_id, :step_ids, :reason)
    HealthRequest = define_message("health_request", :request_id, :timestamp)

    # Closed enumerations (spec §5).
    STEP_STATUSES = %w[completed failed].freeze
    CANCEL_REASONS = %w[timeout task_cancelled step_cancelled superseded].freeze
    WORKER_HEALTH = %w[healthy degraded draining].freeze
    RESULT_KINDS = %w[partial_result batch_completion].freeze
    ACK_OUTCOMES = %w[applied duplicate fenced rejected].freeze

    # Reserved `error_class` values for failures that are not the handler's own (spec §5.4).
    module ReservedErrorClass
      UNKNOWN_HANDLER_CLASS = "tasker.unknown_handler_class"
      OUTPUT_TOO_LARGE = "tasker.output_too_large"
      TIMEOUT = "tasker.timeout"
      CANCELLED = "tasker.cancelled"
    end

    # `hello_rejected` codes of v1 (an open set: unknown codes are fatal for a worker).
    module HelloRejectionCode
      UNSUPPORTED_PROTOCOL_VERSION = "unsupported_protocol_version"
      INVALID_HELLO = "invalid_hello"
      NOT_ACCEPTING_WORKERS = "not_accepting_workers"
    end

    # The key a result is held, deduplicated and acknowledged under: (batch_id, step_id, kind);
    # step_id is nil for a batch completion.
    ResultKey = Struct.new(:batch_id, :step_id, :kind) do
      def self.partial_result(batch_id, step_id)
        new(batch_id, step_id, "partial_result")
      end

      def self.batch_completion(batch_id)
        new(batch_id, nil, "batch_completion")
      end
    end

    class AckEntry
      # The key of the result this entry acknowledges.
      def key
        ResultKey.new(batch_id, step_id, message_kind)
      end
    end

    class StepMetadata
      # The idempotency key of `step_id`'s attempt `attempt`: "<step_id>:<attempt>".
      def self.idempotency_key_for(step_id, attempt)
        "#{step_id}:#{attempt}"
      end
    end
  end
end

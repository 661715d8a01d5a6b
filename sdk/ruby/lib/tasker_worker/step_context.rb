# frozen_string_literal: true

module TaskerWorker
  # The task a step belongs to, as a handler sees it: its id and the context it was created with
  # (a Hash with string keys, as parsed from JSON).
  class Task
    attr_reader :id, :context

    def initialize(id:, context:)
      @id = id
      @context = context
    end

    alias task_id id
  end

  # The results of a step's ancestors, keyed by step name (the protocol's `previous_results`).
  #
  #   sequence["validate_order"]       # => {"order_id" => 42, ...}
  #   sequence.dependencies            # => ["process_payment", "reserve_inventory"]
  class Sequence
    include Enumerable

    attr_reader :previous_results

    def initialize(previous_results)
      @previous_results = previous_results
    end

    # The output of the ancestor step named `step_name`, or nil.
    def [](step_name)
      @previous_results[step_name.to_s]
    end
    alias result_for []

    # Whether the ancestor `step_name` has a result here.
    def key?(step_name)
      @previous_results.key?(step_name.to_s)
    end

    # The names of the ancestor steps with results, sorted.
    def dependencies
      @previous_results.keys.sort
    end

    # Yields each `[step_name, output]`.
    def each(&block)
      @previous_results.each(&block)
    end

    def size
      @previous_results.size
    end

    def empty?
      @previous_results.empty?
    end

    def to_h
      @previous_results
    end
  end

  # Whether, and why, the worker gave up on a step attempt. Set by the worker's loop, read by the
  # handler's thread.
  class Cancellation
    # :timeout, :cancelled or :shutdown once cancelled; nil before.
    attr_reader :reason

    def cancel(reason)
      @reason ||= reason
    end

    def cancelled?
      !@reason.nil?
    end
  end

  # One step attempt, as a handler sees it.
  class Step
    # The step's id and name in its task template.
    attr_reader :id, :name
    # Its task's id, the batch (dispatch) of this attempt, and the class it was routed by.
    attr_reader :task_id, :batch_id, :handler_class
    # The step's `handler_config` from the template (a Hash, possibly empty).
    attr_reader :handler_config
    # Which attempt this is (1 for the first dispatch) and the step's configured retry limit.
    attr_reader :attempt, :retry_limit
    # "<step_id>:<attempt>": stable for this attempt, different for the next. Pass it to external
    # systems that deduplicate requests.
    attr_reader :idempotency_key
    # How long the handler may run, in milliseconds, or nil for no limit.
    attr_reader :timeout_ms
    # The id of the worker running the attempt.
    attr_reader :worker_id

    def initialize(request:, batch_id:, worker_id:, cancellation: Cancellation.new)
      metadata = request.metadata
      @id = request.step_id
      @name = request.step_name
      @task_id = request.task_id
      @batch_id = batch_id
      @handler_class = request.handler_class
      @handler_config = request.handler_config
      @attempt = metadata.attempt
      @retry_limit = metadata.retry_limit
      @idempotency_key = metadata.idempotency_key
      @timeout_ms = metadata.timeout_ms
      @worker_id = worker_id
      @cancellation = cancellation
    end

    alias step_id id
    alias step_name name

    # The timeout in seconds (Float), or nil.
    def timeout
      @timeout_ms && (@timeout_ms / 1000.0)
    end

    # Whether the worker has given up on this attempt (timeout, `cancel_steps`, shutdown). The
    # worker also raises TaskerWorker::StepInterrupted in the handler's thread; handlers that
    # defer that exception with `Thread.handle_interrupt` poll this instead.
    def cancelled?
      @cancellation.cancelled?
    end

    # :timeout, :cancelled or :shutdown once cancelled; nil before.
    def cancellation_reason
      @cancellation.reason
    end
  end
end

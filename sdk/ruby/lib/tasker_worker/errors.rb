# frozen_string_literal: true

module TaskerWorker
  # Base class of every error this SDK raises.
  class Error < StandardError; end

  # Raised by a step handler when another attempt may succeed (a remote service timed out, a
  # rate limit, a lock conflict). The orchestrator retries the step within its template's retry
  # policy. `retry_after:` (seconds) replaces the backoff policy's delay before the next attempt.
  #
  #   raise TaskerWorker::RetryableError.new("carrier API busy", retry_after: 30)
  #
  # The reported `error_class` is `error_class:` if given, else the exception's class name, so a
  # subclass (`class CarrierBusy < TaskerWorker::RetryableError; end`) names itself.
  class RetryableError < Error
    # Seconds the handler wants the orchestrator to wait before the next attempt, or nil.
    attr_reader :retry_after
    # The `error_class` to report instead of the exception's class name, or nil.
    attr_reader :error_class

    def initialize(message = nil, retry_after: nil, error_class: nil)
      super(message)
      if retry_after && !(retry_after.is_a?(Numeric) && retry_after >= 0)
        raise ArgumentError, "retry_after must be a number of seconds >= 0, not #{retry_after.inspect}"
      end

      @retry_after = retry_after
      @error_class = error_class
    end
  end

  # Raised by a step handler when no retry can help (invalid input, a declined payment). The step
  # fails for good. The reported `error_class` is `error_class:` if given, else the exception's
  # class name.
  class PermanentError < Error
    # The `error_class` to report instead of the exception's class name, or nil.
    attr_reader :error_class

    def initialize(message = nil, error_class: nil)
      super(message)
      @error_class = error_class
    end
  end

  # Raised inside a handler's thread when the worker stops the step: its `timeout_ms` passed, the
  # orchestrator cancelled it (`cancel_steps`), or a shutdown's grace period ended. It is an
  # `Exception`, not a `StandardError`, so a handler's `rescue => e` does not swallow it (the
  # same choice Ruby's `Timeout` makes). A handler with a section that must not be cut short
  # (two writes that belong together) wraps it in
  # `Thread.handle_interrupt(TaskerWorker::StepInterrupted => :never) { ... }`: the exception is
  # then delivered when the section ends, and `step.cancelled?` tells the section it is wanted.
  # Either way the attempt is reported as stopped (`tasker.timeout`, `tasker.cancelled`,
  # `tasker.worker_shutdown`) unless the handler returned before the interruption.
  class StepInterrupted < Exception # rubocop:disable Lint/InheritException
  end

  # The orchestrator refused this worker's `hello` for good (`hello_rejected` with a code other
  # than `not_accepting_workers`, which the worker retries with backoff).
  class HelloRejected < Error
    # The rejection code (`unsupported_protocol_version`, `invalid_hello`, or a newer one).
    attr_reader :code

    def initialize(code:, message:)
      super("the orchestrator rejected this worker's hello (#{code}): #{message}")
      @code = code
      @rejection_message = message
    end

    # The orchestrator's human-readable reason.
    def rejection_message
      @rejection_message
    end
  end

  # A worker or client option that breaks a rule (capacity out of range, empty registry, ...).
  class ConfigurationError < Error; end

  # The Tasker HTTP API answered a request with an error status.
  class ApiError < Error
    # The HTTP status code (Integer).
    attr_reader :status
    # The error code from the response body, when it had one.
    attr_reader :code
    # The parsed response body (Hash) or the raw body text.
    attr_reader :body
    # The API's details: one Hash ("pointer", "message") per problem, e.g. each place in the
    # context that fails the template's schema; empty when the body had none.
    attr_reader :details

    def initialize(message, status:, code: nil, body: nil, details: [])
      super(message)
      @status = status
      @code = code
      @body = body
      @details = details
    end
  end
end

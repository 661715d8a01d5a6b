# frozen_string_literal: true

module TaskerWorker
  # Monotonic time in seconds (Float), for deadlines and durations.
  module Clock
    module_function

    def now
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end
  end

  # One step attempt running on a thread of its own. The worker's loop starts it, may interrupt
  # it (timeout, `cancel_steps`, shutdown), and receives its end through a queue: the handler's
  # thread never touches the socket.
  class StepExecution
    # How the attempt ended: `value` if the handler returned, `exception` if it raised; `handler`
    # is the object that ran (nil if it could not be made).
    Finished = Struct.new(:key, :handler, :value, :exception, :elapsed_ms, keyword_init: true)

    attr_reader :key, :step, :deadline, :interruption, :interruption_detail

    # Starts the handler `handler_factory.call` returns on (task, sequence, step) in a new
    # thread; when it ends, pushes a Finished onto `finished` and calls `wake` (so the worker's
    # loop stops waiting on its socket).
    def self.start(key:, task:, sequence:, step:, cancellation:, handler_factory:, finished:, wake:)
      new(key: key, step: step, cancellation: cancellation).tap do |execution|
        execution.send(:run, task, sequence, handler_factory, finished, wake)
      end
    end

    def initialize(key:, step:, cancellation:)
      @key = key
      @step = step
      @cancellation = cancellation
      @started_at = Clock.now
      @deadline = step.timeout && (@started_at + step.timeout)
      @interruption = nil
    end

    # Stops the attempt: marks the step cancelled with `reason` (:timeout, :cancelled or
    # :shutdown; `detail` is the cancel reason) and, unless `cooperative`, raises
    # StepInterrupted in the handler's thread. Only the first call counts.
    def interrupt(reason, detail = nil, cooperative: false)
      return if @interruption

      @interruption = reason
      @interruption_detail = detail
      @cancellation.cancel(reason)
      @thread.raise(StepInterrupted, "step #{@step.id} interrupted (#{reason})") if !cooperative && @thread.alive?
    end

    def interrupted?
      !@interruption.nil?
    end

    # Whether the step's timeout has passed at `now` and it has not been interrupted yet.
    def overdue?(now)
      !@deadline.nil? && @interruption.nil? && now >= @deadline
    end

    # Whether the handler's thread is still running.
    def alive?
      @thread.alive?
    end

    private

    # The interruption may land only while the handler runs, never before it starts or while its
    # result is handed over (the result would be lost): the thread is created with
    # StepInterrupted deferred (a new thread inherits its creator's mask), and only `invoke` lets
    # it through. One that comes later is dropped with the thread.
    def run(task, sequence, handler_factory, finished, wake)
      @thread = Thread.handle_interrupt(StepInterrupted => :never) do
        Thread.new do
          Thread.current.report_on_exception = false
          Thread.current.name = "tasker-step-#{@step.id}"
          handler, value, exception = invoke(task, sequence, handler_factory)
          finished << Finished.new(key: @key, handler: handler, value: value, exception: exception,
                                   elapsed_ms: ((Clock.now - @started_at) * 1000).round)
          wake.call
        end
      end
    end

    def invoke(task, sequence, handler_factory)
      handler = nil
      Thread.handle_interrupt(StepInterrupted => :immediate) do
        handler = handler_factory.call
        value = if handler.respond_to?(:process)
                  handler.process(task, sequence, @step)
                else
                  handler.call(task, sequence, @step)
                end
        [handler, value, nil]
      end
    rescue Exception => e # rubocop:disable Lint/RescueException -- whatever a handler raises fails its step
      [handler, nil, e]
    end
  end

  # How a handler's exception is reported (spec §5.4 `error`): class name, message, backtrace,
  # and whether another attempt may succeed. See StepHandler for the rules.
  module FailureReport
    # Lines of a handler exception's backtrace reported with its failure.
    BACKTRACE_LINES = 20

    module_function

    # The StepError for `exception`, raised by `handler`.
    def from_exception(exception, handler)
      retryable, retry_after, error_class =
        case exception
        when RetryableError then [true, exception.retry_after, exception.error_class]
        when PermanentError then [false, nil, exception.error_class]
        when StandardError then [!permanent_for_handler?(exception, handler), nil, nil]
        else [false, nil, nil]
        end
      message = exception.message.to_s
      message = exception.class.to_s if message.empty?
      Protocol::Builders.step_error(
        message: message,
        error_class: error_class || exception.class.name || exception.class.inspect,
        retryable: retryable,
        retry_after_ms: retry_after && (retry_after * 1000).round,
        backtrace: Array(exception.backtrace).first(BACKTRACE_LINES)
      )
    end

    def permanent_for_handler?(exception, handler)
      klass = handler.is_a?(Module) ? handler : handler.class
      klass.respond_to?(:permanent_error?) && klass.permanent_error?(exception)
    end
  end
end

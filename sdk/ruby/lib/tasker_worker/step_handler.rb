# frozen_string_literal: true

module TaskerWorker
  # Base class of step handlers: the business logic behind a `handler_class`.
  #
  #   class ShipOrderHandler < TaskerWorker::StepHandler
  #     handles "OrderFulfillment::ShipOrderHandler"
  #     permanent_errors KeyError
  #
  #     def process(task, sequence, step)
  #       payment = sequence["process_payment"] or raise TaskerWorker::PermanentError, "not paid"
  #       { "tracking_number" => Carrier.ship(task.context.fetch("order_id"), step.idempotency_key) }
  #     end
  #   end
  #
  # The worker makes a new instance for every step attempt (so instance variables never leak
  # between steps or threads) and calls `process(task, sequence, step)` on a thread of its own.
  # Its return value (any JSON-encodable value, nil included) is the step's output, passed to
  # the step's descendants in their `sequence`. To fail the attempt, raise:
  #
  # - TaskerWorker::RetryableError (optionally `retry_after:` seconds): another attempt may work;
  # - TaskerWorker::PermanentError, or an exception listed in `permanent_errors`: it never will;
  # - any other StandardError: reported with its class name and backtrace as a **retryable**
  #   failure — most unexpected Ruby errors are transient (timeouts, refused connections,
  #   deadlocks), and the step's `retry_limit` bounds the retries;
  # - any other Exception (NotImplementedError, NoMemoryError, SystemStackError, ...): a permanent
  #   failure, since a retry would hit the same bug.
  #
  # Handlers must be idempotent: a step can run more than once (a lost worker, a timeout, a retry).
  class StepHandler
    class << self
      # Registers this class as the handler for each of `handler_classes` (exact,
      # case-sensitive names, as in the task template) in `registry` (by default the global
      # TaskerWorker.registry, which a Worker uses unless given another).
      def handles(*handler_classes, registry: TaskerWorker.registry)
        handler_classes.each { |handler_class| registry.register(handler_class, self) }
        own_handled_classes.concat(handler_classes)
        self
      end

      # The handler classes this class was registered for with `handles`.
      def handled_classes
        own_handled_classes.dup
      end

      # Exception classes that fail a step permanently (not retryable) when a handler of this
      # class (or a subclass) raises them, e.g. `permanent_errors ArgumentError, KeyError`.
      def permanent_errors(*exception_classes)
        @permanent_errors = own_permanent_errors + exception_classes
      end

      # Whether `exception` fails the step permanently by this class's `permanent_errors`.
      def permanent_error?(exception)
        klass = self
        while klass.respond_to?(:own_permanent_errors, true)
          return true if klass.send(:own_permanent_errors).any? { |error_class| exception.is_a?(error_class) }

          klass = klass.superclass
        end
        false
      end

      private

      def own_handled_classes
        @own_handled_classes ||= []
      end

      def own_permanent_errors
        @permanent_errors || []
      end
    end

    # Runs one step attempt; see the class documentation.
    def process(task, sequence, step)
      raise NotImplementedError, "#{self.class} must implement process(task, sequence, step)"
    end
  end
end

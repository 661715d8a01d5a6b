# frozen_string_literal: true

require "test_helper"

# StepHandler, Registry and the mapping of handler exceptions to protocol failures.
class HandlerTest < Minitest::Test
  Protocol = TaskerWorker::Protocol

  class Shipping < TaskerWorker::StepHandler
    permanent_errors KeyError

    def process(_task, _sequence, step)
      step.handler_config.fetch("carrier")
    end
  end

  class ExpressShipping < Shipping
    permanent_errors ArgumentError
  end

  def test_handles_registers_the_class_under_each_name
    registry = TaskerWorker::Registry.new
    klass = Class.new(TaskerWorker::StepHandler) { handles "A::One", "A::Two", registry: registry }
    assert_equal ["A::One", "A::Two"], registry.handler_classes
    assert_equal ["A::One", "A::Two"], klass.handled_classes
    assert_instance_of klass, registry.handler_for("A::One")
    refute_same registry.handler_for("A::One"), registry.handler_for("A::One"), "a new instance per attempt"
  end

  def test_register_accepts_classes_objects_and_blocks
    registry = TaskerWorker::Registry.new
    shared = Object.new.tap { |object| object.define_singleton_method(:process) { |*| :shared } }
    registry.register(Shipping)
    registry.register("obj", shared)
    registry.register("blk") { |_task, _sequence, step| step }

    assert_equal ["HandlerTest::Shipping", "blk", "obj"], registry.handler_classes
    assert_same shared, registry.handler_for("obj")
    assert_raises(KeyError) { registry.handler_for("missing") }
  end

  def test_register_refuses_what_cannot_be_a_handler_class_or_handler
    registry = TaskerWorker::Registry.new
    assert_raises(TaskerWorker::ConfigurationError) { registry.register("", Shipping) }
    assert_raises(TaskerWorker::ConfigurationError) { registry.register("x" * 256, Shipping) }
    assert_raises(TaskerWorker::ConfigurationError) { registry.register("ok", Object.new) }
    assert_raises(ArgumentError) { registry.register("ok") }
  end

  def test_failures_carry_class_retryability_delay_and_backtrace
    retry_later = capture { raise TaskerWorker::RetryableError.new("busy", retry_after: 2.5, error_class: "Busy") }
    report = TaskerWorker::FailureReport.from_exception(retry_later, nil)
    assert_equal ["busy", "Busy", true, 2500], [report.message, report.error_class, report.retryable, report.retry_after_ms]
    refute_empty report.backtrace

    subclass = Class.new(TaskerWorker::PermanentError)
    HandlerTest.const_set(:CardDeclined, subclass) unless HandlerTest.const_defined?(:CardDeclined)
    report = TaskerWorker::FailureReport.from_exception(capture { raise HandlerTest::CardDeclined, "no" }, nil)
    assert_equal ["HandlerTest::CardDeclined", false], [report.error_class, report.retryable]

    report = TaskerWorker::FailureReport.from_exception(capture { raise IOError, "" }, nil)
    assert_equal ["IOError", true, "IOError"], [report.error_class, report.retryable, report.message]

    report = TaskerWorker::FailureReport.from_exception(capture { raise ScriptError, "bug" }, nil)
    assert_equal false, report.retryable
  end

  def test_permanent_errors_are_inherited_and_extended
    key_error = capture { {}.fetch("x") }
    argument_error = capture { Integer("x") }
    refute TaskerWorker::FailureReport.from_exception(key_error, Shipping.new).retryable
    assert TaskerWorker::FailureReport.from_exception(argument_error, Shipping.new).retryable
    refute TaskerWorker::FailureReport.from_exception(key_error, ExpressShipping.new).retryable
    refute TaskerWorker::FailureReport.from_exception(argument_error, ExpressShipping.new).retryable
  end

  def test_retry_after_must_be_non_negative_seconds
    assert_raises(ArgumentError) { TaskerWorker::RetryableError.new("x", retry_after: -1) }
    assert_raises(ArgumentError) { TaskerWorker::RetryableError.new("x", retry_after: "soon") }
  end

  def test_step_context_objects_expose_the_request
    request = Protocol::StepRequest.new(
      step_id: 8, task_id: 3, step_name: "ship", handler_class: "H", handler_config: { "a" => 1 },
      task_context: { "order_id" => 1 }, previous_results: { "b" => 2, "a" => 1 },
      metadata: Protocol::StepMetadata.new(attempt: 2, retry_limit: 5, timeout_ms: 1500, idempotency_key: "8:2")
    )
    cancellation = TaskerWorker::Cancellation.new
    step = TaskerWorker::Step.new(request: request, batch_id: "b-1", worker_id: "w", cancellation: cancellation)
    sequence = TaskerWorker::Sequence.new(request.previous_results)

    assert_equal [8, "ship", 3, "b-1", 2, 5, "8:2", 1500, 1.5, "w"],
                 [step.id, step.name, step.task_id, step.batch_id, step.attempt, step.retry_limit,
                  step.idempotency_key, step.timeout_ms, step.timeout, step.worker_id]
    assert_equal %w[a b], sequence.dependencies
    assert_equal 2, sequence[:b]
    assert sequence.key?("a")
    refute step.cancelled?
    cancellation.cancel(:timeout)
    cancellation.cancel(:shutdown)
    assert_equal [true, :timeout], [step.cancelled?, step.cancellation_reason]
  end

  def test_worker_options_are_checked
    registry = TaskerWorker::Registry.new.register("x") { nil }
    [{ capacity: 0 }, { capacity: 10_001 }, { capacity: 1.5 }, { worker_id: "has space" }, { worker_id: "" },
     { name: "" }, { heartbeat_interval: 0.05 }, { heartbeat_interval: 61 }, { endpoint: "" },
     { shutdown_grace: -1 }].each do |options|
      assert_raises(TaskerWorker::ConfigurationError, options.inspect) do
        TaskerWorker::Worker.new(endpoint: "tcp://127.0.0.1:1", handlers: registry, **options)
      end
    end
  end

  def test_a_worker_without_handlers_refuses_to_run
    worker = TaskerWorker::Worker.new(endpoint: "tcp://127.0.0.1:1", handlers: TaskerWorker::Registry.new,
                                      logger: Logger.new(nil))
    assert_raises(TaskerWorker::ConfigurationError) { worker.run(install_signal_handlers: false) }
  end

  private

  def capture
    yield
  rescue Exception => e # rubocop:disable Lint/RescueException
    e
  end
end

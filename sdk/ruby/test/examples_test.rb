# frozen_string_literal: true

require "test_helper"
require "tmpdir"
require File.join(TaskerWorkerTest::REPO_ROOT, "examples", "ruby", "order_fulfillment.rb")

# The order-fulfillment example handlers and the tasker.test handler, called directly.
class ExamplesTest < Minitest::Test
  Protocol = TaskerWorker::Protocol

  def run_handler(handler_class, config: {}, context: order, previous: {}, attempt: 1, step_name: "step")
    request = Protocol::StepRequest.new(
      step_id: 11, task_id: 5, step_name: step_name, handler_class: handler_class, handler_config: config,
      task_context: context, previous_results: previous,
      metadata: Protocol::StepMetadata.new(attempt: attempt, retry_limit: 3, timeout_ms: nil,
                                           idempotency_key: "11:#{attempt}")
    )
    step = TaskerWorker::Step.new(request: request, batch_id: "0195b4ba-8d3a-7f12-9c4e-6a1d2b3c4d5e", worker_id: "worker-a")
    TaskerWorker.registry.handler_for(handler_class)
                .process(TaskerWorker::Task.new(id: 5, context: context), TaskerWorker::Sequence.new(previous), step)
  end

  def order
    { "order_id" => 42, "customer" => { "email" => "ada@example.com", "name" => "Ada" },
      "items" => [{ "sku" => "BOOK-1", "quantity" => 2, "unit_price_cents" => 1500 },
                  { "sku" => "PEN-9", "quantity" => 1, "unit_price_cents" => 250 }] }
  end

  def test_the_order_workflow_runs_on_its_own_outputs_like_the_rust_built_ins
    validated = run_handler("OrderFulfillment::ValidateOrderHandler", config: { "max_items" => 100 })
    assert_equal({ "order_id" => 42, "customer_email" => "ada@example.com", "item_count" => 2, "total_quantity" => 3,
                   "total_cents" => 3250, "validated" => true }, validated)

    reserved = run_handler("OrderFulfillment::ReserveInventoryHandler", config: { "warehouse" => "east" },
                                                                        previous: { "validate_order" => validated })
    assert_equal ["east", 30], reserved.values_at("warehouse", "hold_minutes")
    assert_equal({ "sku" => "PEN-9", "quantity" => 1, "reservation_id" => "RSV-42-2-PEN-9" }, reserved["reservations"][1])

    paid = run_handler("OrderFulfillment::ProcessPaymentHandler", previous: { "validate_order" => validated })
    # FNV-1a of "42:3250", the same id the Rust ProcessPayment derives.
    assert_equal({ "order_id" => 42, "transaction_id" => "TXN-c8d8265fdda1d513", "amount_cents" => 3250,
                   "gateway" => "sandbox", "captured" => true }, paid)

    shipped = run_handler("OrderFulfillment::ShipOrderHandler", config: { "send_notifications" => false },
                                                                previous: { "reserve_inventory" => reserved, "process_payment" => paid })
    assert_equal({ "order_id" => 42, "tracking_number" => "TRK-D6C90A816B7B", "transaction_id" => "TXN-c8d8265fdda1d513",
                   "reservation_ids" => ["RSV-42-1-BOOK-1", "RSV-42-2-PEN-9"], "notifications_sent" => false }, shipped)
  end

  def test_invalid_orders_fail_permanently_naming_the_problem
    error = assert_raises(TaskerWorker::PermanentError) do
      run_handler("OrderFulfillment::ValidateOrderHandler", context: order.merge("items" => []))
    end
    assert_equal "InvalidOrder", TaskerWorker::FailureReport.from_exception(error, nil).error_class
    assert_includes error.message, "no items"

    bad = order
    bad["items"][1]["quantity"] = 0
    error = assert_raises(TaskerWorker::PermanentError) { run_handler("OrderFulfillment::ValidateOrderHandler", context: bad) }
    assert_includes error.message, "items[1].quantity"

    error = assert_raises(TaskerWorker::PermanentError) do
      run_handler("OrderFulfillment::ValidateOrderHandler", config: { "max_items" => 1 })
    end
    assert_includes error.message, "at most 1"

    error = assert_raises(TaskerWorker::PermanentError) { run_handler("OrderFulfillment::ShipOrderHandler") }
    assert_includes error.message, "reserve_inventory"
  end

  def test_tasker_test_default_output_names_step_attempt_parents_and_worker
    output = run_handler("tasker.test", step_name: "charge", attempt: 2,
                                        previous: { "validate" => 1, "reserve" => { "ok" => true } })
    assert_equal({ "step" => "charge", "attempt" => 2, "previous_results" => %w[reserve validate], "worker" => "worker-a" },
                 output)
  end

  def test_tasker_test_output_is_returned_as_is
    assert_equal({ "total" => 42 }, run_handler("tasker.test", config: { "output" => { "total" => 42 } }))
    assert_nil run_handler("tasker.test", config: { "output" => nil })
  end

  def test_tasker_test_fails_retryably_for_the_first_k_attempts_then_succeeds
    config = { "fail_retryable_attempts" => 2, "retry_after_ms" => 1500 }
    [1, 2].each do |attempt|
      error = assert_raises(TaskerWorker::RetryableError) { run_handler("tasker.test", config: config, attempt: attempt) }
      report = TaskerWorker::FailureReport.from_exception(error, nil)
      assert_equal ["TestRetryableFailure", true, 1500], [report.error_class, report.retryable, report.retry_after_ms]
      assert_includes error.message, "attempt #{attempt}"
    end
    assert_equal 3, run_handler("tasker.test", config: config, attempt: 3)["attempt"]
  end

  def test_tasker_test_permanent_failures_panics_and_overrides
    error = assert_raises(TaskerWorker::PermanentError) do
      run_handler("tasker.test", config: { "fail_permanently" => true, "error_class" => "CardDeclined" })
    end
    assert_equal "CardDeclined", error.error_class
    error = assert_raises(TaskerWorker::PermanentError) { run_handler("tasker.test", config: { "panic" => true }) }
    assert_equal "panic", error.error_class

    context = { "test_behaviour" => { "charge" => { "fail_permanently" => false }, "other" => { "output" => "no" } } }
    assert_equal "config", run_handler("tasker.test", step_name: "charge", context: context,
                                                      config: { "fail_permanently" => true, "output" => "config" })
  end

  def test_tasker_test_wrong_types_fail_permanently_naming_the_key
    error = assert_raises(TaskerWorker::PermanentError) { run_handler("tasker.test", config: { "sleep_ms" => "ten" }) }
    assert_equal "InvalidTestBehaviour", error.error_class
    assert_includes error.message, "sleep_ms"
    error = assert_raises(TaskerWorker::PermanentError) do
      run_handler("tasker.test", step_name: "charge", context: { "test_behaviour" => { "charge" => 3 } })
    end
    assert_includes error.message, "test_behaviour.charge"
  end

  def test_tasker_test_records_every_execution_as_one_line
    Dir.mktmpdir do |dir|
      log = File.join(dir, "executions.log")
      TaskerWorkerTest::TaskerTestHandler.execution_log = log
      run_handler("tasker.test", step_name: "charge")
      assert_raises(TaskerWorker::PermanentError) do
        run_handler("tasker.test", step_name: "charge", attempt: 2, config: { "fail_permanently" => true })
      end
      assert_equal "5 charge 11 1 worker-a\n5 charge 11 2 worker-a\n", File.read(log)
    ensure
      TaskerWorkerTest::TaskerTestHandler.remove_instance_variable(:@execution_log)
    end
  end
end

# frozen_string_literal: true

require "test_helper"
require "rbconfig"

# bin/tasker-worker as a real process: loads handler files, registers them, runs steps, and shuts
# down gracefully on SIGTERM.
class CliTest < Minitest::Test
  BIN = File.join(TaskerWorkerTest::SDK_ROOT, "bin", "tasker-worker")
  LIB = File.join(TaskerWorkerTest::SDK_ROOT, "lib")
  EXAMPLE = File.join(TaskerWorkerTest::REPO_ROOT, "examples", "ruby", "order_fulfillment.rb")
  TEST_HANDLER = File.join(TaskerWorkerTest::SDK_ROOT, "test", "support", "tasker_test_handler.rb")

  def setup
    @orchestrator = TaskerWorkerTest::ScriptedOrchestrator.new
    @stderr_reader, @stderr_writer = IO.pipe
  end

  def teardown
    if @pid
      begin
        Process.kill("KILL", @pid)
      rescue Errno::ESRCH
        nil
      end
      @waiter&.join(5)
    end
    @stderr_reader.close
    @stderr_writer.close unless @stderr_writer.closed?
    @orchestrator.close
  end

  def spawn_worker(*args)
    @pid = Process.spawn(RbConfig.ruby, "-I#{LIB}", BIN, *args, err: @stderr_writer, out: File::NULL)
    @waiter = Process.detach(@pid)
  end

  def exit_status(timeout: 15)
    assert @waiter.join(timeout), "tasker-worker did not exit within #{timeout} s"
    @pid = nil
    @waiter.value.exitstatus
  end

  def test_the_example_runs_and_a_sigterm_says_goodbye
    spawn_worker("--connect", @orchestrator.endpoint, "--require", EXAMPLE, "--require", TEST_HANDLER,
                 "--capacity", "4", "--name", "cli test")
    hello = @orchestrator.handshake(timeout: 15)
    assert_equal ["OrderFulfillment::ProcessPaymentHandler", "OrderFulfillment::ReserveInventoryHandler",
                  "OrderFulfillment::ShipOrderHandler", "OrderFulfillment::ValidateOrderHandler", "tasker.test"],
                 hello.message.handler_classes
    assert_equal [4, "cli test"], [hello.message.capacity, hello.message.name]

    context = { "order_id" => 7, "customer" => { "email" => "grace@example.com" },
                "items" => [{ "sku" => "MUG", "quantity" => 3, "unit_price_cents" => 900 }] }
    @orchestrator.step_batch(hello.identity, [
                               TaskerWorkerTest::ScriptedOrchestrator.step(
                                 1, handler_class: "OrderFulfillment::ValidateOrderHandler", step_name: "validate_order",
                                    task_context: context, handler_config: { "max_items" => 100 }
                               )
                             ])
    result = @orchestrator.expect("partial_result")
    completion = @orchestrator.expect("batch_completion")
    assert_equal({ "order_id" => 7, "customer_email" => "grace@example.com", "item_count" => 1, "total_quantity" => 3,
                   "total_cents" => 2700, "validated" => true }, result.message.output)
    @orchestrator.ack(hello.identity, result, completion)

    Process.kill("TERM", @pid)
    goodbye = @orchestrator.expect("goodbye", timeout: 5).message
    assert_equal ["SIGTERM", []], [goodbye.reason, goodbye.handed_back]
    assert_equal 0, exit_status
  end

  def test_usage_errors_exit_with_status_2
    spawn_worker("--require", EXAMPLE)
    assert_equal 2, exit_status
    @stderr_writer.close
    assert_includes @stderr_reader.read, "--connect ENDPOINT is required"
  end

  def test_a_rejected_hello_exits_with_status_1
    spawn_worker("--connect", @orchestrator.endpoint, "--require", TEST_HANDLER)
    hello = @orchestrator.expect("hello", timeout: 15)
    @orchestrator.send_message(hello.identity, "hello_rejected", code: "unsupported_protocol_version",
                                                                 message: "this orchestrator speaks 2.0")
    assert_equal 1, exit_status
    @stderr_writer.close
    assert_includes @stderr_reader.read, "this orchestrator speaks 2.0"
  end
end

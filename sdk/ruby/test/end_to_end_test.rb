# frozen_string_literal: true

require "test_helper"
require "tmpdir"
require_relative "support/live_tasker"

# End to end against a real `tasker serve`: the Rust orchestrator on free ports with a temporary
# SQLite database, Ruby workers as real processes (bin/tasker-worker), tasks created and read
# through TaskerWorker::Client over the real HTTP API.
#
# The `tasker` binary is $TASKER_BIN (scripts/test.sh builds it and sets it), else
# target/debug/tasker of this checkout. Without one these tests skip loudly — or fail under
# TASKER_REQUIRE_SDKS=1.
#
# The example shapes use `tasker.test`, which test/support/tasker_test_handler.rb implements in
# Ruby (same keys and outputs as the Rust one), so the templates are copied unchanged. Its
# execution log (TASKER_TEST_EXECUTION_LOG, shared by the worker processes) tells what ran where.
class EndToEndTest < Minitest::Test
  LiveTasker = TaskerWorkerTest::LiveTasker
  TEST_HANDLER = File.join(TaskerWorkerTest::SDK_ROOT, "test", "support", "tasker_test_handler.rb")
  ORDER_EXAMPLE = File.join(TaskerWorkerTest::REPO_ROOT, "examples", "ruby", "order_fulfillment.rb")
  require ORDER_EXAMPLE # for the expected ids (OrderFulfillment::OrderReading.fnv1a)
  SHAPES = %w[linear diamond parallel_merge tree mixed_dag].freeze
  ORDER = { "order_id" => 42, "customer" => { "email" => "ada@example.com", "name" => "Ada" },
            "items" => [{ "sku" => "BOOK-1", "quantity" => 2, "unit_price_cents" => 1500 },
                        { "sku" => "PEN-9", "quantity" => 1, "unit_price_cents" => 250 }] }.freeze

  UNAVAILABLE = begin
    LiveTasker.binary
    nil
  rescue LiveTasker::Unavailable => e
    e.message
  end
  if UNAVAILABLE
    warn "\n#{'#' * 78}\nSKIPPED: Ruby SDK end-to-end tests: #{UNAVAILABLE}\n#{'#' * 78}"
  end

  # One orchestrator and two Ruby workers with tasker.test and the order-fulfillment example,
  # shared by the tests that do not kill anything; stopped when the run ends.
  def self.shared_system
    @shared_system ||= begin
      directory = Dir.mktmpdir("tasker-ruby-e2e")
      tasker = LiveTasker.new(directory)
      %w[a b].each { |label| tasker.start_ruby_worker(label, [TEST_HANDLER, ORDER_EXAMPLE]) }
      Minitest.after_run do
        tasker.close
        FileUtils.remove_entry(directory)
      end
      tasker
    end
  end

  def setup
    return unless UNAVAILABLE

    flunk "TASKER_REQUIRE_SDKS=1 forbids skipping the end-to-end tests: #{UNAVAILABLE}" if
      ENV["TASKER_REQUIRE_SDKS"] == "1"
    skip "end-to-end: #{UNAVAILABLE}"
  end

  def test_every_example_shape_completes_with_its_ancestors_results
    tasker = self.class.shared_system
    worker_ids = tasker.workers.map(&:worker_id)
    task_ids = 2.times.flat_map do |round|
      SHAPES.map do |shape|
        tasker.client.initialize_task(namespace: "examples", name: shape, context: { "shape" => shape, "round" => round })
      end
    end
    tasks = tasker.wait_finished(task_ids)

    assert_equal SHAPES.sort, tasks.map { |task| task["name"] }.uniq.sort
    executed = tasker.executions.map { |execution| [execution.task_id, execution.step_name] }
    tasks.each do |task|
      assert_equal "complete", task["state"], task.inspect
      ancestors = ancestors_by_step(task)
      task["steps"].each do |step|
        assert_equal ["complete", 1], [step["state"], step["attempts"]], step.inspect
        output = step["results"]
        assert_equal step["name"], output["step"], step.inspect
        assert_includes worker_ids, output["worker"], "ran on one of the Ruby workers"
        assert_equal ancestors.fetch(step["name"]), output["previous_results"],
                     "step #{step['name']} of #{task['name']} saw the results of exactly its ancestors"
        assert_includes executed, [task["task_id"], step["name"]]
      end
    end
  end

  def test_order_fulfillment_completes_on_the_ruby_example_handlers
    tasker = self.class.shared_system
    task_id = tasker.client.initialize_task(namespace: "order_fulfillment", name: "order_fulfillment",
                                            context: ORDER, idempotency_key: "ruby-e2e-order-42")
    task = tasker.wait_finished([task_id]).first
    assert_equal "complete", task["state"], task.inspect

    steps = task["steps"].to_h { |step| [step["name"], step["results"]] }
    assert_equal 3250, steps["validate_order"]["total_cents"]
    transaction_id = format("TXN-%016x", OrderFulfillment::OrderReading.fnv1a("42:3250"))
    assert_equal({ "order_id" => 42, "transaction_id" => transaction_id, "amount_cents" => 3250,
                   "gateway" => "sandbox", "captured" => true }, steps["process_payment"])
    shipped = steps["ship_order"]
    assert_equal transaction_id, shipped["transaction_id"], "ship_order read process_payment's output"
    assert_equal %w[RSV-42-1-BOOK-1 RSV-42-2-PEN-9], shipped["reservation_ids"]
    assert_equal format("TRK-%012X", OrderFulfillment::OrderReading.fnv1a("42:#{transaction_id}") & 0xFFFF_FFFF_FFFF),
                 shipped["tracking_number"]

    again = tasker.client.initialize_task(namespace: "order_fulfillment", name: "order_fulfillment",
                                          context: ORDER, idempotency_key: "ruby-e2e-order-42")
    assert_equal task_id, again, "a repeated idempotency key returns the existing task"
  end

  def test_the_client_reports_the_apis_refusals
    client = self.class.shared_system.client
    unknown = assert_raises(TaskerWorker::ApiError) do
      client.initialize_task(namespace: "examples", name: "no_such_template", context: {})
    end
    assert_equal [404, "unknown_template"], [unknown.status, unknown.code]
    assert_includes unknown.message, "examples/no_such_template"

    invalid = assert_raises(TaskerWorker::ApiError) do
      client.initialize_task(namespace: "order_fulfillment", name: "order_fulfillment", context: { "order_id" => 1 })
    end
    assert_equal [422, "invalid_context"], [invalid.status, invalid.code]
    assert_equal %w[/context/customer /context/items], invalid.details.map { |detail| detail["pointer"] }.sort
    assert_includes invalid.message, "/context/customer: is required but missing"

    missing = assert_raises(TaskerWorker::ApiError) { client.get_task(987_654_321) }
    assert_equal [404, "task_not_found"], [missing.status, missing.code]
  end

  def test_create_and_wait_returns_the_finished_diamond
    tasker = self.class.shared_system
    # The timeout only bounds a hang; the long poll answers when the task finishes.
    task = tasker.client.create_and_wait(namespace: "examples", name: "diamond", context: {},
                                         timeout: LiveTasker::GUARD_SECONDS)
    assert_equal "complete", task["state"], "#{task.inspect}\n#{tasker.diagnostics}"
    assert_equal "diamond", task["name"]
    assert_equal %w[a b c d], task["steps"].map { |step| step["name"] }.sort
    worker_ids = tasker.workers.map(&:worker_id)
    task["steps"].each do |step|
      assert_equal "complete", step["state"], step.inspect
      assert_includes worker_ids, step["results"]["worker"]
    end
    again = tasker.client.get_task(task["task_id"])
    assert_equal [task["state"], task["steps"]], [again["state"], again["steps"]]
  end

  def test_wait_task_times_out_on_a_slow_task_then_sees_it_finish
    tasker = self.class.shared_system
    # Step a sleeps 3 s: the task cannot finish within the 0.5 s wait.
    task_id = tasker.client.initialize_task(namespace: "examples", name: "diamond",
                                            context: { "test_behaviour" => { "a" => { "sleep_ms" => 3000 } } })
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    error = assert_raises(TaskerWorker::WaitTimeout) { tasker.client.wait_task(task_id, timeout: 0.5) }
    assert_operator Process.clock_gettime(Process::CLOCK_MONOTONIC) - started, :>=, 0.5
    assert_equal task_id, error.task_id
    assert_includes %w[pending in_progress], error.state, error.task.inspect
    assert_equal task_id, error.task["task_id"]

    task = tasker.client.wait_task(task_id, timeout: LiveTasker::GUARD_SECONDS)
    assert_equal "complete", task["state"], "#{task.inspect}\n#{tasker.diagnostics}"
    assert_equal ["complete"], task["steps"].map { |step| step["state"] }.uniq
  end

  def test_the_server_refuses_a_wait_beyond_its_limit
    client = self.class.shared_system.client
    task_id = client.initialize_task(namespace: "examples", name: "linear", context: {})
    # The client never asks for more than 30 000 ms.
    refused = assert_raises(TaskerWorker::ApiError) { client.send(:poll_task, task_id, 60_001) }
    assert_equal [400, "invalid_query"], [refused.status, refused.code]
    assert_equal ["wait_ms"], refused.details.map { |detail| detail["pointer"] }

    missing = assert_raises(TaskerWorker::ApiError) { client.wait_task(987_654_321, timeout: 1) }
    assert_equal [404, "task_not_found"], [missing.status, missing.code]
  end

  def test_a_retryable_failure_is_retried_until_it_succeeds
    tasker = self.class.shared_system
    task_id = tasker.client.initialize_task(
      namespace: "examples", name: "linear",
      context: { "test_behaviour" => { "step_2" => { "fail_retryable_attempts" => 2, "retry_after_ms" => 20 } } }
    )
    task = tasker.wait_finished([task_id]).first
    assert_equal "complete", task["state"], task.inspect

    step2 = steps_by_name(task)["step_2"]
    assert_equal [3, 3], [step2["attempts"], step2["results"]["attempt"]], step2.inspect
    runs = tasker.executions.select { |e| e.task_id == task_id && e.step_name == "step_2" }.map(&:attempt)
    assert_equal [1, 2, 3], runs.sort
    assert_equal %w[step_1 step_2], steps_by_name(task)["step_3"]["results"]["previous_results"]
  end

  def test_a_permanent_failure_fails_the_task_naming_the_step
    tasker = self.class.shared_system
    task_id = tasker.client.initialize_task(
      namespace: "examples", name: "linear", context: { "test_behaviour" => { "step_3" => { "fail_permanently" => true } } }
    )
    task = tasker.wait_finished([task_id]).first
    assert_equal "error", task["state"], task.inspect

    steps = steps_by_name(task)
    assert_equal ["step_3"], task["steps"].select { |step| step["state"] == "error" }.map { |step| step["name"] }
    error = steps["step_3"]["last_error"]
    assert_equal ["TestPermanentFailure", false], [error["error_class"], error["retryable"]], error.inspect
    assert_includes error["message"], "step_3"
    assert_equal 1, steps["step_3"]["attempts"], "a permanent failure is not retried"
    assert_equal %w[complete complete pending], %w[step_1 step_2 step_4].map { |name| steps[name]["state"] }
    ran = tasker.executions.select { |e| e.task_id == task_id }.map(&:step_name)
    assert_equal %w[step_1 step_2 step_3], ran.sort, "step_4 never ran"
  end

  def test_a_worker_killed_mid_step_has_the_step_finished_by_the_other
    Dir.mktmpdir("tasker-ruby-e2e-kill") do |directory|
      tasker = LiveTasker.new(directory)
      begin
        workers = %w[a b].to_h do |label|
          worker = tasker.start_ruby_worker(label, [TEST_HANDLER])
          [worker.worker_id, worker]
        end
        task_id = tasker.client.initialize_task(namespace: "examples", name: "linear",
                                                context: { "test_behaviour" => { "step_2" => { "sleep_ms" => 3000 } } })

        # Whichever worker starts step_2 is killed while it sleeps.
        first = LiveTasker.wait_until("a worker to start step_2") do
          tasker.executions.find { |execution| execution.step_name == "step_2" }
        end
        victim = workers.fetch(first.worker_id)
        survivor = (workers.values - [victim]).first
        victim.process.kill

        task = tasker.wait_finished([task_id]).first
        assert_equal "complete", task["state"], "#{task.inspect}\n#{tasker.diagnostics}"
        runs = tasker.executions.select { |execution| execution.step_name == "step_2" }
        assert_operator runs.size, :<=, 2, "step_2 ran more than twice: #{runs.inspect}"
        assert_equal [[1, victim.worker_id], [2, survivor.worker_id]], runs.map { |r| [r.attempt, r.worker_id] }
        step2 = steps_by_name(task)["step_2"]
        assert_equal 2, step2["attempts"], step2.inspect
        assert_equal [2, survivor.worker_id], [step2["results"]["attempt"], step2["results"]["worker"]],
                     "the result applied is the surviving attempt's, once"
        %w[step_1 step_3 step_4].each do |name|
          assert_equal 1, tasker.executions.count { |execution| execution.step_name == name }, name
          assert_equal 1, steps_by_name(task)[name]["attempts"], name
        end
      ensure
        tasker.close
      end
    end
  end

  def test_the_orchestrator_killed_mid_run_gets_every_result_without_rerunning_a_step
    Dir.mktmpdir("tasker-ruby-e2e-restart") do |directory|
      tasker = LiveTasker.new(directory)
      begin
        %w[a b].each { |label| tasker.start_ruby_worker(label, [TEST_HANDLER]) }
        slow = %w[step_1 step_2 step_3 step_4].to_h { |name| [name, { "sleep_ms" => 300 }] }
        task_ids = 6.times.map do |n|
          tasker.client.initialize_task(namespace: "examples", name: "linear",
                                        context: { "n" => n, "test_behaviour" => slow })
        end
        # Kill it while steps run: their results are then held by the workers, re-sent after the
        # workers register with the new process, and applied.
        LiveTasker.wait_until("eight steps to start") { tasker.executions.size >= 8 }
        tasker.restart

        tasks = tasker.wait_finished(task_ids)
        assert_equal ["complete"], tasks.map { |task| task["state"] }.uniq, tasker.diagnostics
        runs = tasker.executions.group_by(&:step_id)
        tasks.flat_map { |task| task["steps"] }.each do |step|
          ran = runs.fetch(step["step_id"], [])
          assert_equal 1, ran.size, "step #{step['step_id']} ran #{ran.size} times: #{ran.inspect}\n#{tasker.diagnostics}"
          assert_equal [ran.first.attempt, ran.first.worker_id], [step["results"]["attempt"], step["results"]["worker"]]
        end
      ensure
        tasker.close
      end
    end
  end

  private

  def steps_by_name(task)
    task["steps"].to_h { |step| [step["name"], step] }
  end

  # Each step's ancestors (sorted names), from the task's depends_on lists.
  def ancestors_by_step(task)
    parents = task["steps"].to_h { |step| [step["name"], step["depends_on"]] }
    parents.keys.to_h do |name|
      seen = []
      pending = parents[name].dup
      until pending.empty?
        parent = pending.pop
        next if seen.include?(parent)

        seen << parent
        pending.concat(parents[parent])
      end
      [name, seen.sort]
    end
  end
end

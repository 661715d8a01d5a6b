# frozen_string_literal: true

require "test_helper"

# The worker against a scripted orchestrator speaking the protocol over a real ROUTER socket.
# Every frame the worker sends is decoded (and so validated) by the SDK's worker→orchestrator
# decoder. Waits are bounded by poll timeouts; nothing sleeps and hopes.
class WorkerSessionTest < Minitest::Test
  include TaskerWorkerTest::WorkerHarness

  Gate = TaskerWorkerTest::Gate

  def test_hello_announces_the_worker
    worker, = start_worker(capacity: 7, name: "ruby test workers", heartbeat_interval: 0.25)
    hello = @orchestrator.expect("hello").message

    assert_equal "1.0", hello.protocol_version
    assert_equal worker.worker_id, hello.worker_id
    assert_match(/\A[A-Za-z0-9._:@-]+-#{Process.pid}-\h{8}\z/, hello.worker_id)
    assert_equal "ruby test workers", hello.name
    assert_equal ["tasker-worker-ruby", TaskerWorker::VERSION, "ruby"],
                 [hello.sdk.name, hello.sdk.version, hello.sdk.language]
    assert_equal ["tasker.test"], hello.handler_classes
    assert_equal 7, hello.capacity
    assert_equal 250, hello.heartbeat_interval_ms
    assert_equal [], hello.in_flight
  end

  def test_heartbeats_flow_after_welcome_at_the_negotiated_interval
    worker, _thread, identity = start_registered_worker(capacity: 3, welcome: { heartbeat_interval_ms: 100 })
    beats = Array.new(3) { @orchestrator.expect("heartbeat", timeout: 2) }

    beats.each do |beat|
      assert_equal identity, beat.identity
      assert_equal worker.worker_id, beat.message.worker_id
      assert_equal 0, beat.message.in_flight
      assert_equal 3, beat.message.free_capacity
    end
    assert worker.registered?
    assert_operator worker.stats[:heartbeats_sent], :>=, 3
  end

  def test_heartbeats_go_on_while_every_slot_runs_a_blocked_handler
    gate = Gate.new
    _worker, _thread, identity = start_registered_worker(handlers: { "gate" => gate.handler }, capacity: 2)
    @orchestrator.step_batch(identity, [step(1, handler_class: "gate"), step(2, handler_class: "gate")])
    2.times { gate.started.pop(timeout: 5) }

    # Heartbeats sent before the batch arrived may still be queued: skip to the first that counts
    # the two steps, then every following one must too.
    beat = @orchestrator.expect("heartbeat", timeout: 2).message until beat&.in_flight == 2
    beats = Array.new(3) { @orchestrator.expect("heartbeat", timeout: 2).message }
    assert(beats.all? { |item| item.in_flight == 2 && item.free_capacity.zero? }, beats.inspect)
    [1, 2].each { |id| gate.release(id) }
  end

  def test_a_batch_of_three_gives_three_partial_results_and_one_completion
    _worker, _thread, identity = start_registered_worker
    batch_id = @orchestrator.step_batch(identity, [
                                          step(11, handler_config: { "output" => { "n" => 1 } }),
                                          step(12, handler_config: { "fail_permanently" => true }),
                                          step(13, previous_results: { "b" => 1, "a" => 2 }, attempt: 2)
                                        ])
    partials = Array.new(3) { @orchestrator.expect("partial_result").message }
    completion = @orchestrator.expect("batch_completion").message

    by_step = partials.to_h { |result| [result.step_id, result] }
    assert_equal [11, 12, 13], by_step.keys.sort
    assert(partials.all? { |result| result.batch_id == batch_id })
    assert_equal [1, 2, 3], partials.map(&:sequence).sort
    assert_equal ["completed", { "n" => 1 }], [by_step[11].status, by_step[11].output]
    assert_equal "failed", by_step[12].status
    assert_equal ["TestPermanentFailure", false], [by_step[12].error.error_class, by_step[12].error.retryable]
    assert_equal 2, by_step[13].attempt
    assert_equal %w[a b], by_step[13].output["previous_results"]

    assert_equal batch_id, completion.batch_id
    assert_equal [3, 2, 1], [completion.total_steps, completion.completed_steps, completion.failed_steps]
    assert_equal [[11, "completed"], [12, "failed"], [13, "completed"]],
                 completion.step_summaries.map { |summary| [summary.step_id, summary.status] }
  end

  def test_handler_errors_map_to_failures
    handlers = TaskerWorker::Registry.new
    handlers.register("retry.later") { raise TaskerWorker::RetryableError.new("busy", retry_after: 1.5) }
    handlers.register("oops") { [1, 2].fetch(7) }
    handlers.register("bug") { raise NotImplementedError, "later" }
    handlers.register("declined") { raise TaskerWorker::PermanentError.new("card declined", error_class: "CardDeclined") }
    _worker, _thread, identity = start_registered_worker(handlers: handlers)
    @orchestrator.step_batch(identity, %w[retry.later oops bug declined unknown.class].each_with_index.map do |name, i|
      step(i + 1, handler_class: name)
    end)
    errors = Array.new(5) { @orchestrator.expect("partial_result").message }.to_h { |result| [result.step_id, result.error] }

    assert_equal ["TaskerWorker::RetryableError", true, 1500, "busy"],
                 [errors[1].error_class, errors[1].retryable, errors[1].retry_after_ms, errors[1].message]
    assert_equal ["IndexError", true, nil], [errors[2].error_class, errors[2].retryable, errors[2].retry_after_ms]
    assert_match(/worker_session_test\.rb:\d+/, errors[2].backtrace.first)
    assert_equal ["NotImplementedError", false], [errors[3].error_class, errors[3].retryable]
    assert_equal ["CardDeclined", false], [errors[4].error_class, errors[4].retryable]
    assert_equal ["tasker.unknown_handler_class", true], [errors[5].error_class, errors[5].retryable]
    assert_includes errors[5].message, "unknown.class"
  end

  def test_results_are_resent_until_acknowledged
    worker, _thread, identity = start_registered_worker(welcome: { heartbeat_interval_ms: 100, liveness: 3 })
    @orchestrator.step_batch(identity, [step(21)])
    first = @orchestrator.expect("partial_result")
    completion = @orchestrator.expect("batch_completion")

    # Unacknowledged, both come again after liveness × interval, byte for byte.
    again = @orchestrator.expect("partial_result", timeout: 3)
    assert_equal first.frame, again.frame
    assert_equal completion.frame, @orchestrator.expect("batch_completion", timeout: 3).frame

    @orchestrator.ack(identity, first, completion)
    wait_until { worker.stats[:results_unacknowledged].zero? }
    assert_equal 2, worker.stats[:results_acknowledged]
    # Once acknowledged, nothing is re-sent: ten heartbeats (five re-send periods) pass without a result.
    10.times { @orchestrator.expect("heartbeat", timeout: 2) }
  end

  def test_capacity_bounds_the_running_steps_and_the_excess_waits
    gate = Gate.new
    _worker, _thread, identity = start_registered_worker(handlers: { "gate" => gate.handler }, capacity: 2)
    first_batch = @orchestrator.step_batch(identity, [step(1, handler_class: "gate"), step(2, handler_class: "gate")])
    2.times { gate.started.pop(timeout: 5) }
    second_batch = @orchestrator.step_batch(identity, [step(3, handler_class: "gate")])

    error = @orchestrator.expect("error").message
    assert_equal ["capacity_exceeded", second_batch], [error.code, error.batch_id]
    # Two heartbeats later the loop has gone round at least once since it queued step 3.
    beat = Array.new(2) { @orchestrator.expect("heartbeat", timeout: 2).message }.last
    assert_equal [3, 0], [beat.in_flight, beat.free_capacity]
    assert_equal 0, gate.started.size, "a third step started beyond capacity 2"

    gate.release(1)
    assert_equal [first_batch, 1], @orchestrator.expect("partial_result").message.then { |r| [r.batch_id, r.step_id] }
    assert_equal 3, gate.started.pop(timeout: 5)
    [2, 3].each { |id| gate.release(id) }
    ids = Array.new(2) { @orchestrator.expect("partial_result", skip: %w[heartbeat batch_completion]).message.step_id }
    assert_equal [2, 3], ids.sort
    assert_equal 2, gate.max_running
  end

  def test_cancel_steps_stops_running_and_queued_steps
    gate = Gate.new
    _worker, _thread, identity = start_registered_worker(handlers: { "gate" => gate.handler }, capacity: 1)
    batch_id = @orchestrator.step_batch(identity, [step(31, handler_class: "gate"), step(32, handler_class: "gate")])
    assert_equal "capacity_exceeded", @orchestrator.expect("error").message.code
    assert_equal 31, gate.started.pop(timeout: 5)

    @orchestrator.send_message(identity, "cancel_steps", batch_id: batch_id, step_ids: [32, 31, 99], reason: "task_cancelled")
    results = Array.new(2) { @orchestrator.expect("partial_result").message }.to_h { |r| [r.step_id, r] }
    completion = @orchestrator.expect("batch_completion").message

    results.each_value do |result|
      assert_equal "failed", result.status
      assert_equal ["tasker.cancelled", false], [result.error.error_class, result.error.retryable]
      assert_includes result.error.message, "task_cancelled"
    end
    assert_equal 0, results[32].execution_time_ms, "the queued step never ran"
    assert_equal [2, 0, 2], [completion.total_steps, completion.completed_steps, completion.failed_steps]
    assert_equal 0, gate.started.size, "the queued step must not start after its cancellation"
  end

  def test_a_step_past_its_timeout_is_stopped_and_reported_retryable
    observed = TaskerWorkerTest::Mailbox.new
    handlers = TaskerWorker::Registry.new.register("slow") do |_task, _sequence, step|
      sleep 30
    ensure
      observed << step.cancelled? << step.cancellation_reason
    end
    _worker, _thread, identity = start_registered_worker(handlers: handlers)
    @orchestrator.step_batch(identity, [step(41, handler_class: "slow", timeout_ms: 150)])
    result = @orchestrator.expect("partial_result", timeout: 5).message

    assert_equal "failed", result.status
    assert_equal ["tasker.timeout", true], [result.error.error_class, result.error.retryable]
    assert_includes result.error.message, "150 ms"
    assert_operator result.execution_time_ms, :>=, 150
    assert_operator result.execution_time_ms, :<, 5000
    assert_equal [true, :timeout], [observed.pop(timeout: 1), observed.pop(timeout: 1)]
  end

  def test_cooperative_stopping_only_flags_the_step
    entered = TaskerWorkerTest::Mailbox.new
    handlers = TaskerWorker::Registry.new
    handlers.register("polite") do |_task, _sequence, step|
      entered << :running
      sleep 0.005 until step.cancelled?
      raise TaskerWorker::PermanentError, "stopped because #{step.cancellation_reason}"
    end
    handlers.register("finisher") do |_task, _sequence, step|
      entered << :running
      sleep 0.005 until step.cancelled?
      { "finished_anyway" => step.cancellation_reason.to_s }
    end
    _worker, _thread, identity = start_registered_worker(handlers: handlers, interrupt_handlers: false)
    batch_id = @orchestrator.step_batch(identity, [step(121, handler_class: "polite"), step(122, handler_class: "finisher")])
    2.times { entered.pop(timeout: 5) }
    @orchestrator.send_message(identity, "cancel_steps", batch_id: batch_id, step_ids: [121, 122], reason: "step_cancelled")
    results = Array.new(2) { @orchestrator.expect("partial_result").message }.to_h { |result| [result.step_id, result] }

    assert_equal "tasker.cancelled", results[121].error.error_class, "a handler that raises once flagged is reported stopped"
    assert_equal({ "finished_anyway" => "cancelled" }, results[122].output, "a handler that returns reports its result")
  end

  def test_health_requests_are_answered
    worker, _thread, identity = start_registered_worker(capacity: 4)
    request_id = SecureRandom.uuid
    @orchestrator.send_message(identity, "health_request", request_id: request_id, timestamp: "2025-01-23T19:57:52.123Z")
    reply = @orchestrator.expect("health_reply").message

    assert_equal [request_id, worker.worker_id, "healthy", 0, 4],
                 [reply.request_id, reply.worker_id, reply.status, reply.in_flight, reply.free_capacity]
    assert_equal RUBY_VERSION, reply.details["ruby_version"]
  end

  def test_hello_rejected_raises_with_its_code_and_message
    _worker, thread = start_worker
    hello = @orchestrator.expect("hello")
    @orchestrator.send_message(hello.identity, "hello_rejected", code: "invalid_hello",
                                                                 message: "missing_field: missing required field `capacity`")
    error = result_of(thread)

    assert_instance_of TaskerWorker::HelloRejected, error
    assert_equal "invalid_hello", error.code
    assert_equal "missing_field: missing required field `capacity`", error.rejection_message
  end

  def test_not_accepting_workers_is_retried_on_a_fresh_connection
    worker, = start_worker(hello_timeout: 0.1)
    first = @orchestrator.expect("hello")
    @orchestrator.send_message(first.identity, "hello_rejected", code: "not_accepting_workers", message: "shutting down")
    second = @orchestrator.expect("hello", timeout: 3)

    refute_equal first.identity, second.identity, "a retry uses a fresh connection"
    @orchestrator.welcome(second.identity, second.message.worker_id)
    @orchestrator.expect("heartbeat", timeout: 2)
    assert worker.registered?
  end

  def test_graceful_shutdown_says_goodbye_hands_back_queued_steps_and_waits_for_acks
    gate = Gate.new
    worker, thread, identity = start_registered_worker(handlers: { "gate" => gate.handler }, capacity: 1)
    batch_id = @orchestrator.step_batch(identity, [step(51, handler_class: "gate"), step(52, handler_class: "gate")])
    assert_equal "capacity_exceeded", @orchestrator.expect("error").message.code
    assert_equal 51, gate.started.pop(timeout: 5)

    worker.stop("deploy")
    goodbye = @orchestrator.expect("goodbye").message
    assert_equal [worker.worker_id, "deploy"], [goodbye.worker_id, goodbye.reason]
    assert_equal [[batch_id, 52]], goodbye.handed_back.map { |ref| [ref.batch_id, ref.step_id] }

    # A batch arriving while draining is handed back whole.
    late = @orchestrator.step_batch(identity, [step(53, handler_class: "gate")])
    assert_equal [[late, 53]], @orchestrator.expect("goodbye").message.handed_back.map { |r| [r.batch_id, r.step_id] }

    gate.release(51)
    result = @orchestrator.expect("partial_result")
    assert_equal ["completed", 51], [result.message.status, result.message.step_id]
    beat = @orchestrator.expect("heartbeat", timeout: 2)
    assert_equal 0, beat.message.in_flight, "heartbeats go on while results wait for their ack"
    assert thread.alive?, "the worker waits for the ack"
    @orchestrator.ack(identity, result)

    assert_equal true, result_of(thread)
    assert_equal 0, gate.started.size, "no handed-back step ran"
    assert_equal 2, worker.stats[:steps_handed_back]
  end

  def test_steps_still_running_after_the_grace_period_are_stopped
    gate = Gate.new
    worker, thread, identity = start_registered_worker(handlers: { "gate" => gate.handler }, shutdown_grace: 0.2)
    @orchestrator.step_batch(identity, [step(61, handler_class: "gate")])
    gate.started.pop(timeout: 5)
    worker.stop
    @orchestrator.expect("goodbye")
    result = @orchestrator.expect("partial_result", timeout: 5)

    assert_equal ["tasker.worker_shutdown", true], [result.message.error.error_class, result.message.error.retryable]
    completion = @orchestrator.expect("batch_completion")
    @orchestrator.ack(identity, result, completion)
    assert_equal true, result_of(thread)
  end

  def test_a_second_stop_ends_the_grace_period_at_once
    gate = Gate.new
    worker, thread, identity = start_registered_worker(handlers: { "gate" => gate.handler }, shutdown_grace: 60)
    @orchestrator.step_batch(identity, [step(62, handler_class: "gate")])
    gate.started.pop(timeout: 5)
    worker.stop
    @orchestrator.expect("goodbye")
    request_id = SecureRandom.uuid
    @orchestrator.send_message(identity, "health_request", request_id: request_id, timestamp: "2025-01-23T19:57:52Z")
    assert_equal "draining", @orchestrator.expect("health_reply").message.status

    worker.stop
    result = @orchestrator.expect("partial_result", timeout: 5)
    assert_equal "tasker.worker_shutdown", result.message.error.error_class
    @orchestrator.ack(identity, result, @orchestrator.expect("batch_completion"))
    assert_equal true, result_of(thread, timeout: 5)
  end

  def test_a_worker_that_never_registered_stops_at_once
    worker, thread = start_worker
    @orchestrator.expect("hello")
    worker.stop
    assert_equal true, result_of(thread, timeout: 5)
  end

  def test_without_an_answer_hello_is_repeated_on_fresh_connections_with_backoff
    _worker, = start_worker(hello_timeout: 0.1, retry_backoff_max: 0.4)
    hellos = Array.new(4) { @orchestrator.expect("hello", timeout: 5) }
    assert_equal 4, hellos.map(&:identity).uniq.size, "each retry is a fresh connection"
    assert_equal 1, hellos.map { |hello| hello.message.worker_id }.uniq.size, "with the same worker_id"
  end

  def test_garbage_is_counted_answered_and_survived
    worker, _thread, identity = start_registered_worker
    batch_id = SecureRandom.uuid
    @orchestrator.send_frames(identity, "not json at all")
    assert_equal ["invalid_json", nil], @orchestrator.expect("error").message.then { |e| [e.code, e.offending_message_type] }

    @orchestrator.send_frames(identity, '{"message_type":"welcome"}', "{}")
    assert_equal "multipart_message", @orchestrator.expect("error").message.code

    @orchestrator.send_frames(identity, '{"message_type":"step_batch","protocol_version":"2.0"}')
    assert_equal "unsupported_protocol_version", @orchestrator.expect("error").message.code

    @orchestrator.send_frames(identity, '{"message_type":"hello","protocol_version":"1.0"}')
    assert_equal "unknown_message_type", @orchestrator.expect("error").message.code

    @orchestrator.send_message(identity, "step_batch", batch_id: batch_id, steps: [])
    rejected = @orchestrator.expect("error").message
    assert_equal ["invalid_field_value", "step_batch", batch_id], [rejected.code, rejected.offending_message_type, rejected.batch_id]
    assert_includes rejected.message, "steps"

    # A malformed error is never answered; the worker carries on and runs the next batch.
    @orchestrator.send_frames(identity, '{"message_type":"error","protocol_version":"1.0","code":"Bad Code","message":""}')
    @orchestrator.send_frames(identity, "\xFF\xFE".b)
    assert_equal "invalid_json", @orchestrator.expect("error").message.code
    @orchestrator.step_batch(identity, [step(71)])
    assert_equal "completed", @orchestrator.expect("partial_result").message.status

    stats = worker.stats
    assert_equal 7, stats[:rejected_frames]
    assert_equal({ "invalid_json" => 2, "multipart_message" => 1, "unsupported_protocol_version" => 1,
                   "unknown_message_type" => 1, "invalid_field_value" => 2 }, stats[:rejected_frames_by_code])
  end

  def test_an_orchestrator_error_naming_a_held_result_drops_it
    worker, _thread, identity = start_registered_worker
    batch_id = @orchestrator.step_batch(identity, [step(81)])
    @orchestrator.expect("partial_result")
    @orchestrator.expect("batch_completion")
    wait_until { worker.stats[:results_unacknowledged] == 2 }

    @orchestrator.send_message(identity, "error", code: "worker_id_mismatch", message: "not yours",
                                                  offending_message_type: "partial_result", batch_id: batch_id, step_id: 81)
    wait_until { worker.stats[:results_unacknowledged] == 1 }
    assert_equal 1, worker.stats[:results_dropped]
    assert_includes @log.string, "dropping it"
  end

  def test_an_oversized_output_is_reported_as_output_too_large
    handlers = TaskerWorker::Registry.new.register("big") { { "blob" => "x" * 70_000 } }
    _worker, _thread, identity = start_registered_worker(handlers: handlers, welcome: { max_frame_bytes: 65_536 })
    @orchestrator.step_batch(identity, [step(91, handler_class: "big")])
    result = @orchestrator.expect("partial_result").message

    assert_equal ["failed", nil], [result.status, result.output]
    assert_equal ["tasker.output_too_large", false], [result.error.error_class, result.error.retryable]
    assert_includes result.error.message, "65536"
  end

  def test_an_output_json_cannot_carry_is_a_permanent_failure
    handlers = TaskerWorker::Registry.new.register("nan") { { "ratio" => Float::NAN } }
    _worker, _thread, identity = start_registered_worker(handlers: handlers)
    @orchestrator.step_batch(identity, [step(92, handler_class: "nan")])
    result = @orchestrator.expect("partial_result").message

    assert_equal [TaskerWorker::Worker::INVALID_OUTPUT_ERROR_CLASS, false], [result.error.error_class, result.error.retryable]
  end

  def test_a_duplicate_batch_is_ignored
    handlers = TaskerWorker::Registry.new.register("count") { |_t, _s, step| step.id }
    _worker, _thread, identity = start_registered_worker(handlers: handlers)
    batch_id = @orchestrator.step_batch(identity, [step(93, handler_class: "count")])
    @orchestrator.step_batch(identity, [step(93, handler_class: "count")], batch_id: batch_id)
    @orchestrator.expect("partial_result")
    @orchestrator.expect("batch_completion")
    # The copy produced nothing: the next message after two more heartbeats is still a heartbeat.
    3.times { @orchestrator.expect("heartbeat", timeout: 2, skip: []) }
  end

  def test_a_silent_orchestrator_gets_a_new_hello_with_in_flight_and_the_held_results_again
    worker, _thread, identity = start_registered_worker(welcome: { heartbeat_interval_ms: 100, liveness: 3 })
    batch_id = @orchestrator.step_batch(identity, [step(101)])
    result = @orchestrator.expect("partial_result")
    completion = @orchestrator.expect("batch_completion")

    # Say nothing: after 3 × 100 ms the worker declares the orchestrator dead and reconnects.
    @orchestrator.go_silent
    rehello = @orchestrator.expect("hello", timeout: 5, skip: %w[heartbeat partial_result batch_completion])
    refute_equal identity, rehello.identity
    assert_equal [[batch_id, 101]], rehello.message.in_flight.map { |ref| [ref.batch_id, ref.step_id] }
    assert_equal worker.worker_id, rehello.message.worker_id

    @orchestrator.welcome(rehello.identity, worker.worker_id)
    resent = [@orchestrator.expect("partial_result"), @orchestrator.expect("batch_completion")]
    assert_equal [result.frame, completion.frame], resent.map(&:frame), "re-sent unchanged, in order"
    assert(resent.all? { |item| item.identity == rehello.identity })
    @orchestrator.ack(rehello.identity, *resent)
    wait_until { worker.stats[:results_unacknowledged].zero? }
    assert_operator worker.stats[:reconnects], :>=, 1
  end

  def test_not_registered_makes_the_worker_say_hello_again_on_the_same_connection
    worker, _thread, identity = start_registered_worker(hello_timeout: 0.3)
    @orchestrator.step_batch(identity, [step(111)])
    result = @orchestrator.expect("partial_result")
    @orchestrator.expect("batch_completion")

    # Play a restarted orchestrator: every heartbeat gets not_registered until a hello comes
    # (the worker says hello at most once per hello timeout).
    rehello = nil
    until rehello
      received = @orchestrator.next_message(skip: %w[partial_result batch_completion])
      case received.message.message_type
      when "heartbeat"
        @orchestrator.send_message(identity, "error", code: "not_registered", message: "who are you?",
                                                      offending_message_type: "heartbeat")
      when "hello" then rehello = received
      else flunk "unexpected #{received.frame}"
      end
    end
    assert_equal identity, rehello.identity, "same connection"
    assert_equal [111], rehello.message.in_flight.map(&:step_id)
    @orchestrator.welcome(identity, worker.worker_id)
    assert_equal result.frame, @orchestrator.expect("partial_result").frame
  end

  # A restarted orchestrator gives workers a few liveness windows to claim their steps; a worker
  # registered moments before the restart must not wait out its hello timeout.
  def test_the_first_not_registered_of_a_session_gets_a_hello_at_once
    worker, _thread, identity = start_registered_worker(hello_timeout: 60, welcome: { liveness: 100 })
    @orchestrator.send_message(identity, "error", code: "not_registered", message: "who are you?",
                                                  offending_message_type: "heartbeat")
    rehello = @orchestrator.expect("hello", timeout: 5)
    assert_equal identity, rehello.identity
    @orchestrator.welcome(identity, worker.worker_id, liveness: 100)

    # A second not_registered within the hello timeout gets no second hello: only heartbeats.
    @orchestrator.send_message(identity, "error", code: "not_registered", message: "who are you?",
                                                  offending_message_type: "heartbeat")
    5.times { assert_equal "heartbeat", @orchestrator.next_message(skip: []).message.message_type }
  end

  private

  # Waits (polling the worker's counters) until the block is true; fails after `timeout`.
  def wait_until(timeout: 5)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    until yield
      flunk "condition not met within #{timeout} s" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
      @orchestrator.pump(0.005)
    end
  end
end

# frozen_string_literal: true

require "test_helper"
require_relative "support/stub_http_server"

# TaskerWorker::Client against a stub HTTP server on a real socket.
class ClientTest < Minitest::Test
  def setup
    @server = TaskerWorkerTest::StubHttpServer.new
    @client = TaskerWorker::Client.new(@server.base_url)
  end

  def teardown
    @server.close
  end

  def test_initialize_task_posts_the_request_and_returns_the_task_id
    @server.respond(201, { "task_id" => 6591 })
    task_id = @client.initialize_task(namespace: "order_fulfillment", name: "order_fulfillment",
                                      context: { "order_id" => 42 }, version: "1.0.0", idempotency_key: "order-42",
                                      initiator: "checkout", source_system: "web", reason: "new order",
                                      tags: %w[priority])
    request = @server.requests.pop

    assert_equal 6591, task_id
    assert_equal %w[POST /v1/tasks], [request.method, request.path]
    assert_equal "application/json", request.headers["content-type"]
    assert_equal({ "namespace" => "order_fulfillment", "name" => "order_fulfillment", "version" => "1.0.0",
                   "context" => { "order_id" => 42 }, "idempotency_key" => "order-42", "initiator" => "checkout",
                   "source_system" => "web", "reason" => "new order", "tags" => ["priority"] }, request.json)
  end

  def test_optional_fields_left_out_are_not_sent
    @server.respond(201, { "task_id" => 1 })
    @client.initialize_task(namespace: "n", name: "t", context: {})
    assert_equal({ "namespace" => "n", "name" => "t", "context" => {} }, @server.requests.pop.json)
  end

  def test_an_existing_task_for_an_idempotency_key_is_returned
    @server.respond(200, { "task_id" => 77, "created" => false })
    assert_equal 77, @client.initialize_task(namespace: "n", name: "t", context: {}, idempotency_key: "k")
  end

  def test_a_client_error_raises_api_error_with_the_servers_message
    @server.respond(422, { "error" => { "code" => "invalid_context",
                                        "message" => "/customer/email: is required but missing" } })
    error = assert_raises(TaskerWorker::ApiError) do
      @client.initialize_task(namespace: "order_fulfillment", name: "order_fulfillment", context: {})
    end

    assert_equal 422, error.status
    assert_equal "invalid_context", error.code
    assert_includes error.message, "/customer/email: is required but missing"
    assert_includes error.message, "422"
  end

  def test_the_apis_error_details_are_kept_and_shown
    details = [{ "pointer" => "/context/customer/email", "message" => "is required but missing" },
               { "pointer" => "/context/items", "message" => "[] has fewer than 1 item" }]
    @server.respond(422, { "error" => { "code" => "invalid_context", "message" => "2 violations",
                                        "details" => details } })
    error = assert_raises(TaskerWorker::ApiError) do
      @client.initialize_task(namespace: "order_fulfillment", name: "order_fulfillment", context: {})
    end

    assert_equal details, error.details
    assert_equal "POST /v1/tasks failed with 422 (invalid_context): 2 violations " \
                 "(/context/customer/email: is required but missing; /context/items: [] has fewer than 1 item)",
                 error.message
  end

  def test_error_bodies_of_other_shapes_are_read_too
    @server.respond(404, { "error" => "no template order_fulfillment/nope" })
    error = assert_raises(TaskerWorker::ApiError) { @client.initialize_task(namespace: "x", name: "nope", context: {}) }
    assert_includes error.message, "no template order_fulfillment/nope"

    @server.respond(400, "bad request body", content_type: "text/plain")
    error = assert_raises(TaskerWorker::ApiError) { @client.initialize_task(namespace: "x", name: "y", context: {}) }
    assert_equal 400, error.status
    assert_includes error.message, "bad request body"
  end

  def test_get_task_reads_the_task
    @server.respond(200, { "task_id" => 5, "status" => "complete" })
    assert_equal({ "task_id" => 5, "status" => "complete" }, @client.get_task(5))
    request = @server.requests.pop
    assert_equal %w[GET /v1/tasks/5], [request.method, request.path]
  end

  def test_get_task_of_an_unknown_id_raises
    @server.respond(404, { "error" => { "code" => "not_found", "message" => "task 9 does not exist" } })
    error = assert_raises(TaskerWorker::ApiError) { @client.get_task(9) }
    assert_equal [404, "not_found"], [error.status, error.code]
  end

  def test_a_base_url_path_prefix_is_kept
    client = TaskerWorker::Client.new("#{@server.base_url}/tasker/")
    @server.respond(200, { "task_id" => 5 })
    client.get_task(5)
    assert_equal "/tasker/v1/tasks/5", @server.requests.pop.path
  end

  def test_an_unreachable_server_raises_a_connection_error
    port = TCPServer.new("127.0.0.1", 0).then { |server| server.addr[1].tap { server.close } }
    error = assert_raises(TaskerWorker::ApiConnectionError) { TaskerWorker::Client.new("http://127.0.0.1:#{port}").get_task(1) }
    assert_includes error.message, "127.0.0.1:#{port}"
  end

  def test_a_base_url_must_be_http
    assert_raises(TaskerWorker::ConfigurationError) { TaskerWorker::Client.new("tcp://127.0.0.1:5555") }
  end

  def test_the_client_identifies_itself
    @server.respond(200, { "task_id" => 5 })
    @client.get_task(5)
    assert_equal "tasker-worker-ruby/#{TaskerWorker::VERSION}", @server.requests.pop.headers["user-agent"]
  end
end

# Client#wait_task and #create_and_wait: the long poll GET /v1/tasks/{id}?wait_ms=N, against the
# stub server, and the client's kept-alive connections.
class ClientWaitTest < Minitest::Test
  Client = TaskerWorker::Client
  LONG_POLL_MS = Client::LONG_POLL_MS

  # A flag threads can wait on.
  class Latch
    def initialize
      @mutex = Mutex.new
      @changed = ConditionVariable.new
      @set = false
    end

    def set
      @mutex.synchronize do
        @set = true
        @changed.broadcast
      end
    end

    def set?
      @mutex.synchronize { @set }
    end

    # Waits until set or `seconds` passed; whether it is set.
    def wait(seconds)
      deadline = monotonic + seconds
      @mutex.synchronize do
        until @set
          left = deadline - monotonic
          break if left <= 0

          @changed.wait(@mutex, left)
        end
        @set
      end
    end

    private

    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end
  end

  def setup
    @servers = []
    @closing = Latch.new
  end

  def teardown
    @closing.set
    @servers.each(&:close)
  end

  def stub(keep_alive: false)
    TaskerWorkerTest::StubHttpServer.new(keep_alive: keep_alive).tap { |server| @servers << server }
  end

  def task_view(task_id, state)
    { "task_id" => task_id, "state" => state, "steps" => [{ "name" => "a", "state" => state }] }
  end

  def wait_ms_of(request)
    Integer(request.query.fetch("wait_ms"))
  end

  def monotonic
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  # Waits until the server has received `count` requests (at most 10 s).
  def wait_for_requests(server, count)
    deadline = monotonic + 10
    sleep 0.01 while server.recorded.size < count && monotonic < deadline
    assert_operator server.recorded.size, :>=, count, "the server did not receive #{count} requests"
  end

  # Waits until the server has closed `count` connections (at most 10 s).
  def wait_for_closed_connections(server, count)
    deadline = monotonic + 10
    sleep 0.01 while server.closed_connections < count && monotonic < deadline
    assert_operator server.closed_connections, :>=, count, "the server did not close #{count} connections"
  end

  # Answers the polls of `task_id` at once with `states` in turn (the last one again when they
  # run out); a POST creates `task_id`.
  def answer_states(server, task_id, states, drop: ->(_request) { false })
    remaining = states.dup
    server.respond_with do |request|
      if drop.call(request)
        nil
      elsif request.method == "POST"
        [201, { "task_id" => task_id, "created" => true }]
      elsif request.route != "/v1/tasks/#{task_id}"
        [404, { "error" => { "code" => "task_not_found", "message" => "no such task" } }]
      else
        [200, task_view(task_id, remaining.size > 1 ? remaining.shift : remaining.first)]
      end
    end
  end

  # Answers like the real long poll: holds each request until `finished` is set or its wait_ms
  # passed, then answers the task's state at that moment.
  def hold_like_the_server(server, task_id, finished)
    server.respond_with do |request|
      wait = request.query.key?("wait_ms") ? wait_ms_of(request) / 1000.0 : 0
      deadline = monotonic + wait
      until finished.set? || @closing.set? || (left = deadline - monotonic) <= 0
        finished.wait([left, 0.05].min)
      end
      [200, task_view(task_id, finished.set? ? "complete" : "in_progress")]
    end
  end

  def test_wait_task_polls_with_wait_ms_until_the_task_has_finished
    server = stub
    answer_states(server, 7, %w[pending in_progress complete])
    task = Client.new(server.base_url).wait_task(7)

    assert_equal task_view(7, "complete"), task
    assert_equal ["GET /v1/tasks/7?wait_ms=30000"] * 3, server.recorded.map { |r| "#{r.method} #{r.path}" }
    assert_equal 30_000, LONG_POLL_MS
  end

  def test_every_final_state_ends_the_wait
    %w[complete error cancelled resolved_manually].each do |state|
      server = stub
      answer_states(server, 3, [state])
      assert_equal state, Client.new(server.base_url).wait_task(3, timeout: 5)["state"]
      assert_equal 1, server.recorded.size, state
    end
  end

  def test_wait_task_returns_as_soon_as_the_held_poll_answers
    server = stub
    finished = Latch.new
    hold_like_the_server(server, 7, finished)
    waiting = Thread.new { Client.new(server.base_url, read_timeout: 2).wait_task(7) }
    # The poll is held by the server: the client's ordinary 2 s read timeout must not cut it.
    wait_for_requests(server, 1)
    assert waiting.alive?, "wait_task returned before the task finished"
    finished.set

    assert_equal "complete", waiting.value["state"]
    assert_equal [LONG_POLL_MS], server.recorded.map { |request| wait_ms_of(request) }
  end

  def test_the_long_poll_read_timeout_is_longer_than_its_wait
    server = stub
    hold_like_the_server(server, 7, Latch.new)
    started = monotonic
    error = assert_raises(TaskerWorker::WaitTimeout) do
      Client.new(server.base_url, read_timeout: 0.2).wait_task(7, timeout: 0.8)
    end

    # The server held the poll for about 0.8 s, four times the read timeout: the client read its
    # answer instead of giving up after 0.2 s.
    assert_operator monotonic - started, :>=, 0.8
    assert_equal "in_progress", error.state
    assert_includes 701..800, wait_ms_of(server.recorded.first)
  end

  def test_an_ordinary_request_keeps_the_read_timeout
    server = stub
    released = Latch.new
    server.respond_with do
      released.wait(10)
      [200, task_view(7, "complete")]
    end
    error = assert_raises(TaskerWorker::ApiConnectionError) { Client.new(server.base_url, read_timeout: 0.2).get_task(7) }
    released.set

    assert_includes error.message, "ReadTimeout"
    assert_equal 1, server.recorded.size, "a timed-out request is not sent again"
  end

  def test_a_timeout_raises_with_the_last_seen_state
    server = stub
    hold_like_the_server(server, 7, Latch.new)
    started = monotonic
    error = assert_raises(TaskerWorker::WaitTimeout) { Client.new(server.base_url).wait_task(7, timeout: 0.3) }

    assert_operator monotonic - started, :>=, 0.3, "no timeout before the time given"
    assert_kind_of TaskerWorker::Error, error
    assert_equal [7, "in_progress", 0.3], [error.task_id, error.state, error.timeout]
    assert_equal task_view(7, "in_progress"), error.task
    assert_equal "task 7 did not finish within 0.3 s (last seen state: in_progress)", error.message
    # Each poll asks for no more than what was left of the 0.3 s.
    waits = server.recorded.map { |request| wait_ms_of(request) }
    assert_includes 251..300, waits.first, waits.inspect
    assert(waits.all? { |wait| wait <= 300 }, waits.inspect)
  end

  def test_a_timeout_of_zero_looks_once
    server = stub
    answer_states(server, 7, ["pending"])
    error = assert_raises(TaskerWorker::WaitTimeout) { Client.new(server.base_url).wait_task(7, timeout: 0) }
    assert_equal "pending", error.state
    assert_equal ["/v1/tasks/7?wait_ms=0"], server.recorded.map(&:path)

    answer_states(server, 7, ["complete"])
    assert_equal "complete", Client.new(server.base_url).wait_task(7, timeout: 0)["state"]
  end

  def test_long_timeouts_are_cut_into_polls_of_at_most_30_s
    server = stub
    answer_states(server, 7, ["complete"])
    client = Client.new(server.base_url)
    client.wait_task(7, timeout: 3600)
    client.wait_task(7, timeout: 12.5)
    client.wait_task(7, timeout: Float::INFINITY)
    first, second, third = server.recorded.map { |request| wait_ms_of(request) }

    assert_equal [LONG_POLL_MS, LONG_POLL_MS], [first, third]
    assert_includes 12_001..12_500, second
  end

  def test_a_server_answering_at_once_is_not_polled_in_a_tight_loop
    server = stub
    answer_states(server, 7, ["in_progress"])
    assert_raises(TaskerWorker::WaitTimeout) { Client.new(server.base_url).wait_task(7, timeout: 0.5) }

    # Polls start MIN_POLL_INTERVAL (0.2 s) apart, and one more at the deadline.
    assert_equal 0.2, Client::MIN_POLL_INTERVAL
    assert_includes 2..4, server.recorded.size
  end

  def test_invalid_query_is_raised_as_the_api_error
    server = stub
    details = [{ "pointer" => "wait_ms", "message" => "wait_ms is 90000; at most 60000" }]
    server.respond_with do
      [400, { "error" => { "code" => "invalid_query", "message" => "invalid query: wait_ms: wait_ms is 90000; at most 60000",
                           "details" => details } }]
    end
    error = assert_raises(TaskerWorker::ApiError) { Client.new(server.base_url).wait_task(7, timeout: 5) }

    assert_equal [400, "invalid_query", details], [error.status, error.code, error.details]
    assert_includes error.message, "GET /v1/tasks/7?wait_ms="
    assert_includes error.message, "(wait_ms: wait_ms is 90000; at most 60000)"
    assert_equal 1, server.recorded.size, "a refusal ends the wait"
  end

  def test_waiting_for_an_unknown_task_raises_task_not_found
    server = stub
    answer_states(server, 7, ["complete"])
    error = assert_raises(TaskerWorker::ApiError) { Client.new(server.base_url).wait_task(8) }
    assert_equal [404, "task_not_found"], [error.status, error.code]
  end

  def test_a_negative_timeout_is_refused
    server = stub
    client = Client.new(server.base_url)
    [-1, Float::NAN, "5"].each do |timeout|
      assert_raises(ArgumentError) { client.wait_task(7, timeout: timeout) }
      assert_raises(ArgumentError) { client.create_and_wait(namespace: "n", name: "t", context: {}, timeout: timeout) }
    end
    assert_empty server.recorded
  end

  def test_create_and_wait_creates_the_task_then_waits_for_it
    server = stub
    answer_states(server, 9, %w[in_progress complete])
    task = Client.new(server.base_url).create_and_wait(namespace: "examples", name: "diamond", context: { "n" => 1 },
                                                        version: "1.0.0", idempotency_key: "k-1", tags: ["x"])

    assert_equal task_view(9, "complete"), task
    post, *polls = server.recorded
    assert_equal %w[POST /v1/tasks], [post.method, post.path]
    assert_equal({ "namespace" => "examples", "name" => "diamond", "version" => "1.0.0", "context" => { "n" => 1 },
                   "idempotency_key" => "k-1", "tags" => ["x"] }, post.json)
    assert_equal ["/v1/tasks/9?wait_ms=30000"] * 2, polls.map(&:path)
  end

  def test_create_and_wait_times_out_naming_the_task_created
    server = stub
    answer_states(server, 9, ["pending"])
    error = assert_raises(TaskerWorker::WaitTimeout) do
      Client.new(server.base_url).create_and_wait(namespace: "examples", name: "diamond", context: {}, timeout: 0)
    end

    assert_equal [9, "pending"], [error.task_id, error.state]
    assert_equal ["/v1/tasks", "/v1/tasks/9?wait_ms=0"], server.recorded.map(&:path)
  end

  def test_create_and_wait_reports_a_refused_creation
    server = stub
    server.respond(404, { "error" => { "code" => "unknown_template", "message" => "no template examples/nope" } })
    error = assert_raises(TaskerWorker::ApiError) do
      Client.new(server.base_url).create_and_wait(namespace: "examples", name: "nope", context: {})
    end

    assert_equal [404, "unknown_template"], [error.status, error.code]
    assert_equal 1, server.recorded.size
  end

  def test_one_kept_alive_connection_carries_every_request
    server = stub(keep_alive: true)
    answer_states(server, 9, %w[in_progress complete])
    client = Client.new(server.base_url)
    client.create_and_wait(namespace: "examples", name: "diamond", context: {})
    client.get_task(9)

    assert_equal 4, server.recorded.size
    assert_equal 1, server.recorded.map(&:port).uniq.size
  end

  def test_a_connection_the_server_closed_while_idle_is_replaced
    server = stub(keep_alive: true)
    server.close_after_answer = true
    answer_states(server, 9, ["complete"])
    client = Client.new(server.base_url)
    3.times do |n|
      assert_equal "complete", client.get_task(9)["state"]
      wait_for_closed_connections(server, n + 1)
    end
    assert_equal 9, client.initialize_task(namespace: "examples", name: "diamond", context: {})

    assert_equal 4, server.recorded.size, "each request was sent once"
    assert_equal 4, server.recorded.map(&:port).uniq.size
  end

  def test_a_get_cut_off_on_a_reused_connection_is_sent_again
    server = stub(keep_alive: true)
    answer_states(server, 9, ["complete"], drop: ->(_request) { server.recorded.size == 2 })
    client = Client.new(server.base_url)
    client.get_task(9)

    assert_equal "complete", client.wait_task(9)["state"]
    ports = server.recorded.map(&:port)
    assert_equal 3, ports.size
    assert_equal ports[0], ports[1]
    refute_equal ports[1], ports[2]
  end

  def test_a_post_cut_off_on_a_reused_connection_is_not_sent_again
    server = stub(keep_alive: true)
    answer_states(server, 9, ["complete"], drop: ->(request) { request.method == "POST" })
    client = Client.new(server.base_url)
    client.get_task(9)
    error = assert_raises(TaskerWorker::ApiConnectionError) do
      client.initialize_task(namespace: "examples", name: "diamond", context: {})
    end

    assert_includes error.message, "cannot reach"
    assert_equal %w[GET POST], server.recorded.map(&:method)
    assert_equal "complete", client.get_task(9)["state"], "the client recovers on a new connection"
  end

  def test_threads_share_a_client_without_waiting_for_each_other
    server = stub(keep_alive: true)
    finished = Latch.new
    hold_like_the_server(server, 7, finished)
    client = Client.new(server.base_url)
    waits = 3.times.map { Thread.new { client.wait_task(7) } }
    # Three long polls are held at once, each on its own connection; an ordinary request from
    # yet another thread is answered meanwhile.
    wait_for_requests(server, 3)
    assert(waits.all?(&:alive?))
    assert_equal "in_progress", Thread.new { client.get_task(7) }.value["state"]
    finished.set

    assert_equal %w[complete] * 3, waits.map { |thread| thread.value["state"] }
    assert_operator server.recorded.map(&:port).uniq.size, :>=, 3
    client.close
    assert_equal "complete", client.get_task(7)["state"], "a closed client reconnects"
  end
end

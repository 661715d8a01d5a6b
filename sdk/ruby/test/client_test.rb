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
end

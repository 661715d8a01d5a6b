# frozen_string_literal: true

require "json"
require "net/http"
require "uri"
require_relative "version"
require_relative "errors"

module TaskerWorker
  # A small client of the Tasker HTTP API, for applications that start tasks from Ruby.
  #
  #   client = TaskerWorker::Client.new("http://127.0.0.1:8080")
  #   task_id = client.initialize_task(namespace: "order_fulfillment", name: "order_fulfillment",
  #                                    context: { "order_id" => 42, ... }, idempotency_key: "order-42")
  #   client.get_task(task_id) # => {"task_id" => ..., "state" => "in_progress", "steps" => [...], ...}
  #
  # Error statuses raise ApiError (with the status, the body's error code, message and details);
  # failures to reach the server raise ApiConnectionError.
  class Client
    # What a failure to reach the server raises inside Net::HTTP.
    CONNECTION_ERRORS = [SystemCallError, IOError, SocketError, Timeout::Error,
                         (OpenSSL::SSL::SSLError if defined?(OpenSSL::SSL::SSLError))].compact.freeze

    attr_reader :base_url

    # - base_url: where the API is served, e.g. "http://127.0.0.1:8080" (a path prefix is kept).
    # - open_timeout, read_timeout: seconds.
    # - headers: extra request headers (e.g. authorization).
    def initialize(base_url, open_timeout: 5, read_timeout: 30, headers: {})
      @base_url = URI(base_url.to_s)
      unless %w[http https].include?(@base_url.scheme) && @base_url.host
        raise ConfigurationError, "base_url must be an http(s) URL, not #{base_url.inspect}"
      end

      @open_timeout = open_timeout
      @read_timeout = read_timeout
      @headers = headers
    end

    # Creates a task from the template `namespace`/`name` (its latest version unless `version`)
    # with the JSON `context`; returns the new task's id (`POST /v1/tasks`). With an
    # `idempotency_key` already used, the server returns the existing task's id.
    def initialize_task(namespace:, name:, context:, version: nil, idempotency_key: nil, initiator: nil,
                        source_system: nil, reason: nil, tags: nil)
      body = { namespace: namespace, name: name, version: version, context: context,
               idempotency_key: idempotency_key, initiator: initiator, source_system: source_system,
               reason: reason, tags: tags }.compact
      response = request(Net::HTTP::Post, "/v1/tasks", body)
      task_id = response.is_a?(Hash) ? response["task_id"] : nil
      raise ApiError.new("POST /v1/tasks answered without a task_id", status: 201, body: response) if task_id.nil?

      task_id
    end

    # The task with `task_id` as the API describes it (`GET /v1/tasks/{id}`), a Hash: "state"
    # (pending, in_progress, complete, error, cancelled, resolved_manually), "context",
    # "step_counts" and "steps" (each with "name", "state", "attempts", "depends_on", "results" —
    # the step's output — and "last_error").
    def get_task(task_id)
      request(Net::HTTP::Get, "/v1/tasks/#{URI.encode_www_form_component(task_id.to_s)}")
    end

    private

    def request(verb, path, body = nil)
      uri = @base_url.dup
      uri.path = "#{@base_url.path.chomp('/')}#{path}"
      http_request = verb.new(uri)
      http_request["Accept"] = "application/json"
      http_request["User-Agent"] = "#{SDK_NAME}/#{VERSION}"
      @headers.each { |key, value| http_request[key] = value }
      if body
        http_request["Content-Type"] = "application/json"
        http_request.body = JSON.generate(body)
      end
      response = perform(uri, http_request)
      parsed = parse_body(response)
      return parsed if response.is_a?(Net::HTTPSuccess)

      raise api_error(verb::METHOD, path, response, parsed)
    end

    def perform(uri, http_request)
      Net::HTTP.start(uri.host, uri.port, use_ssl: uri.scheme == "https",
                                          open_timeout: @open_timeout, read_timeout: @read_timeout) do |http|
        http.request(http_request)
      end
    rescue *CONNECTION_ERRORS => e
      raise ApiConnectionError, "cannot reach the Tasker API at #{@base_url}: #{e.class}: #{e.message}"
    end

    def parse_body(response)
      body = response.body.to_s
      return nil if body.empty?

      JSON.parse(body)
    rescue JSON::ParserError
      body
    end

    def api_error(method, path, response, parsed)
      code, message = error_details(parsed)
      message ||= response.message
      status = response.code.to_i
      details = problem_details(parsed)
      text = "#{method} #{path} failed with #{status}#{code ? " (#{code})" : ''}: #{message}"
      text += " (#{details.map { |detail| describe_detail(detail) }.join('; ')})" unless details.empty?
      ApiError.new(text, status: status, code: code, body: parsed, details: details)
    end

    # The "details" list of {"error": {"code", "message", "details": [{"pointer", "message"}]}}.
    def problem_details(parsed)
      error = parsed.is_a?(Hash) ? parsed["error"] : nil
      details = error.is_a?(Hash) ? error["details"] : nil
      details.is_a?(Array) ? details.grep(Hash) : []
    end

    def describe_detail(detail)
      pointer = detail["pointer"]
      pointer.is_a?(String) && !pointer.empty? ? "#{pointer}: #{detail['message']}" : detail["message"].to_s
    end

    # The error code and message from the usual body shapes: {"error": {"code", "message"}},
    # {"error": "message", "code"}, {"message"}, or plain text.
    def error_details(parsed)
      case parsed
      when Hash
        error = parsed["error"]
        if error.is_a?(Hash)
          [error["code"], error["message"]]
        else
          [parsed["code"], error.is_a?(String) ? error : parsed["message"]]
        end
      when String then [nil, parsed.strip.empty? ? nil : parsed.strip[0, 500]]
      else [nil, nil]
      end
    end
  end

  # The Tasker HTTP API could not be reached (refused, timed out, TLS failure).
  class ApiConnectionError < Error; end
end

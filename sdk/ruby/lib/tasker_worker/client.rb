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
  #   client.wait_task(task_id, timeout: 60) # => the task once it has finished
  #   client.create_and_wait(namespace: "examples", name: "diamond", context: {}, timeout: 60)
  #
  # Error statuses raise ApiError (with the status, the body's error code, message and details);
  # failures to reach the server raise ApiConnectionError; a wait that runs out of time raises
  # WaitTimeout.
  #
  # Connections are kept alive and reused. A client is thread-safe: it keeps a small pool of idle
  # connections guarded by a mutex, and each request borrows one (or opens a new one) for its
  # duration, so requests from several threads — a long poll among them — never wait for each
  # other.
  class Client
    # What a failure to reach the server raises inside Net::HTTP.
    CONNECTION_ERRORS = [SystemCallError, IOError, SocketError, Timeout::Error,
                         (OpenSSL::SSL::SSLError if defined?(OpenSSL::SSL::SSLError))].compact.freeze
    # A task in one of these states has finished: wait_task returns it.
    FINISHED_STATES = %w[complete error cancelled resolved_manually].freeze
    # The longest wait asked of the server in one long poll, in milliseconds (it accepts up to
    # 60 000; a longer wait is several polls).
    LONG_POLL_MS = 30_000
    # Least time between the starts of two polls of one wait, in seconds: with a server that
    # answers at once instead of holding the request, a wait still makes at most 5 requests a
    # second.
    MIN_POLL_INTERVAL = 0.2
    # Idle kept-alive connections a client keeps at most (more are closed when returned).
    MAX_IDLE_CONNECTIONS = 8

    attr_reader :base_url

    # - base_url: where the API is served, e.g. "http://127.0.0.1:8080" (a path prefix is kept).
    # - open_timeout, read_timeout: seconds, for each request (a long poll of wait_task reads for
    #   its wait plus read_timeout).
    # - headers: extra request headers (e.g. authorization).
    def initialize(base_url, open_timeout: 5, read_timeout: 30, headers: {})
      @base_url = URI(base_url.to_s)
      unless %w[http https].include?(@base_url.scheme) && @base_url.host
        raise ConfigurationError, "base_url must be an http(s) URL, not #{base_url.inspect}"
      end

      @open_timeout = open_timeout
      @read_timeout = read_timeout
      @headers = headers
      @idle = []
      @pool_lock = Mutex.new
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
      request(Net::HTTP::Get, task_path(task_id))
    end

    # Waits until the task with `task_id` has finished (state complete, error, cancelled or
    # resolved_manually) and returns it as get_task does.
    #
    # Long polls `GET /v1/tasks/{id}?wait_ms=N` (N at most LONG_POLL_MS, and never beyond the
    # deadline), as many times as needed: the server answers as soon as the task finishes.
    # `timeout:` (seconds) bounds the wait: when it passes first, WaitTimeout is raised with the
    # task's last seen state (the task itself runs on). nil waits as long as it takes; 0 looks
    # once. Whatever the timeout, the task is read at least once. A refused request (an unknown
    # task: 404 task_not_found) raises ApiError at once, an unreachable server
    # ApiConnectionError.
    def wait_task(task_id, timeout: nil)
      deadline = deadline_for(timeout)
      wait_until_finished(task_id, deadline, timeout)
    end

    # Creates a task as initialize_task does (same arguments) and waits for it as wait_task does;
    # returns the finished task. `timeout:` (seconds, nil: no limit) counts from this call,
    # creation included; when it passes first, WaitTimeout is raised, whose task_id names the
    # task created.
    def create_and_wait(namespace:, name:, context:, version: nil, idempotency_key: nil, initiator: nil,
                        source_system: nil, reason: nil, tags: nil, timeout: nil)
      deadline = deadline_for(timeout)
      task_id = initialize_task(namespace: namespace, name: name, context: context, version: version,
                                idempotency_key: idempotency_key, initiator: initiator,
                                source_system: source_system, reason: reason, tags: tags)
      wait_until_finished(task_id, deadline, timeout)
    end

    # Closes the idle kept-alive connections. The client stays usable (a later request opens a
    # new connection).
    def close
      idle = @pool_lock.synchronize { @idle.slice!(0..) }
      idle.each { |http| finish_quietly(http) }
      nil
    end

    private

    def task_path(task_id)
      "/v1/tasks/#{URI.encode_www_form_component(task_id.to_s)}"
    end

    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end

    def deadline_for(timeout)
      return nil if timeout.nil?
      unless timeout.is_a?(Numeric) && timeout >= 0
        raise ArgumentError, "timeout must be a number of seconds >= 0 or nil, not #{timeout.inspect}"
      end

      monotonic + timeout
    end

    def wait_until_finished(task_id, deadline, timeout)
      loop do
        started = monotonic
        left_ms = deadline ? (deadline - started) * 1000 : LONG_POLL_MS
        wait_ms = left_ms >= LONG_POLL_MS ? LONG_POLL_MS : [left_ms.ceil, 0].max
        task = poll_task(task_id, wait_ms)
        return task if FINISHED_STATES.include?(task["state"])

        now = monotonic
        raise WaitTimeout.new(task_id: task_id, timeout: timeout, task: task) if deadline && now >= deadline

        # A server that holds the request answers no sooner than wait_ms: this pause is then
        # zero. One that answers at once is not polled in a tight loop.
        pause = started + MIN_POLL_INTERVAL - now
        pause = [pause, deadline - now].min if deadline
        sleep(pause) if pause.positive?
      end
    end

    # GET /v1/tasks/{id}?wait_ms=N, reading for N ms more than an ordinary request.
    def poll_task(task_id, wait_ms)
      path = task_path(task_id)
      task = request(Net::HTTP::Get, path, query: "wait_ms=#{wait_ms}",
                                           read_timeout: (wait_ms / 1000.0) + @read_timeout)
      return task if task.is_a?(Hash)

      raise ApiError.new("GET #{path} answered with something other than a JSON object: #{task.inspect[0, 200]}",
                         status: 200, body: task)
    end

    def request(verb, path, body = nil, query: nil, read_timeout: @read_timeout)
      uri = @base_url.dup
      uri.path = "#{@base_url.path.chomp('/')}#{path}"
      uri.query = query if query
      http_request = verb.new(uri)
      http_request["Accept"] = "application/json"
      http_request["User-Agent"] = "#{SDK_NAME}/#{VERSION}"
      @headers.each { |key, value| http_request[key] = value }
      if body
        http_request["Content-Type"] = "application/json"
        http_request.body = JSON.generate(body)
      end
      response = perform(http_request, read_timeout)
      parsed = parse_body(response)
      return parsed if response.is_a?(Net::HTTPSuccess)

      raise api_error(verb::METHOD, query ? "#{path}?#{query}" : path, response, parsed)
    end

    # Sends the request on a pooled connection. Net::HTTP replaces a kept-alive connection the
    # server closed while idle (or idle longer than its keep_alive_timeout, 2 s) before using it.
    # A GET that still fails on a reused connection is sent once more on a new one; a POST is
    # not (it might run twice), and timeouts are never retried.
    def perform(http_request, read_timeout)
      attempts = 0
      begin
        attempts += 1
        http, reused = check_out
        http.start unless http.started?
        http.read_timeout = read_timeout
        response = http.request(http_request)
      rescue *CONNECTION_ERRORS => e
        finish_quietly(http)
        retry if attempts == 1 && reused && http_request.is_a?(Net::HTTP::Get) && !e.is_a?(Timeout::Error)
        raise ApiConnectionError, "cannot reach the Tasker API at #{@base_url}: #{e.class}: #{e.message}"
      rescue Exception # rubocop:disable Lint/RescueException
        finish_quietly(http)
        raise
      end
      check_in(http)
      response
    end

    # An idle connection (and whether it was already open), else a new one, not yet started.
    def check_out
      http = @pool_lock.synchronize { @idle.pop }
      return [http, true] if http

      http = Net::HTTP.new(@base_url.host, @base_url.port)
      http.use_ssl = @base_url.scheme == "https"
      http.open_timeout = @open_timeout
      http.read_timeout = @read_timeout
      # The client sends a GET again itself, only when that is safe (see perform).
      http.max_retries = 0
      [http, false]
    end

    def check_in(http)
      kept = @pool_lock.synchronize do
        @idle.size < MAX_IDLE_CONNECTIONS && @idle.push(http)
      end
      finish_quietly(http) unless kept
    end

    def finish_quietly(http)
      http.finish if http&.started?
    rescue IOError, SystemCallError
      nil
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

  # Client#wait_task (or #create_and_wait) gave up: the task had not finished when `timeout`
  # seconds had passed. The task runs on: wait again to see it finish.
  class WaitTimeout < Error
    # The task waited for.
    attr_reader :task_id
    # Its last seen state ("pending", "in_progress", ...).
    attr_reader :state
    # The last answer of GET /v1/tasks/{id} (a Hash).
    attr_reader :task
    # The timeout given, seconds.
    attr_reader :timeout

    def initialize(task_id:, timeout:, task:)
      @task_id = task_id
      @timeout = timeout
      @task = task
      @state = task["state"]
      super("task #{task_id} did not finish within #{timeout} s (last seen state: #{@state})")
    end
  end
end

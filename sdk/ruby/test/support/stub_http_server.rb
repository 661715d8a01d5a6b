# frozen_string_literal: true

require "socket"
require "json"
require "uri"

module TaskerWorkerTest
  # A tiny HTTP/1.1 server on a free loopback port (Ruby 3.1 ships no WEBrick): it records each
  # request and answers with the next scripted response (`respond`), or with what a block given
  # to `respond_with` returns. Each connection is served on its own thread.
  #
  # - keep_alive: false (the default) answers one request per connection (`Connection: close`);
  #   true keeps connections open for more requests.
  # - close_after_answer: with keep_alive, closes the connection after each answer without
  #   saying so (a kept-alive connection the server dropped while it was idle).
  class StubHttpServer
    Request = Struct.new(:method, :path, :headers, :body, :port, :at, keyword_init: true) do
      def json
        JSON.parse(body)
      end

      # The path without its query.
      def route
        path.split("?", 2).first
      end

      # The query's parameters, a Hash of String => String.
      def query
        URI.decode_www_form(path.split("?", 2)[1].to_s).to_h
      end
    end

    attr_reader :requests
    attr_accessor :close_after_answer

    def initialize(keep_alive: false)
      @keep_alive = keep_alive
      @close_after_answer = false
      @server = TCPServer.new("127.0.0.1", 0)
      @responses = Queue.new
      @requests = Queue.new
      @recorded = []
      @recorded_lock = Mutex.new
      @closed_connections = 0
      @responder = nil
      @connections = Queue.new
      @thread = Thread.new { serve }
      @thread.report_on_exception = false
    end

    def base_url
      "http://127.0.0.1:#{@server.addr[1]}"
    end

    # Scripts the next response.
    def respond(status, body = nil, content_type: "application/json")
      @responses << [status, encode(body), content_type]
      self
    end

    # Answers every request from now on with the block's [status, body], called with the
    # Request; nil closes the connection without an answer.
    def respond_with(&block)
      @responder = block
      self
    end

    # Every request recorded so far, oldest first (without consuming them).
    def recorded
      @recorded_lock.synchronize { @recorded.dup }
    end

    # How many connections the server has closed so far.
    def closed_connections
      @recorded_lock.synchronize { @closed_connections }
    end

    def close
      @thread.kill
      @connections.size.times { @connections.pop.kill }
      @server.close
    end

    private

    def encode(body)
      body.is_a?(String) || body.nil? ? body.to_s : JSON.generate(body)
    end

    def serve
      loop do
        client = @server.accept
        thread = Thread.new(client) do |connection|
          serve_connection(connection)
        rescue IOError, SystemCallError
          nil
        ensure
          connection.close
          @recorded_lock.synchronize { @closed_connections += 1 }
        end
        thread.report_on_exception = false
        @connections << thread
      end
    end

    def serve_connection(client)
      loop do
        answered = handle(client)
        break unless answered && @keep_alive && !@close_after_answer
      end
    end

    # Reads one request and answers it; false when there was none or it was left unanswered.
    def handle(client)
      request_line = client.gets
      return false if request_line.nil?

      method, path = request_line.split(" ", 3)
      headers = {}
      while (line = client.gets) && line != "\r\n"
        name, value = line.split(":", 2)
        headers[name.strip.downcase] = value.to_s.strip
      end
      body = client.read(headers.fetch("content-length", "0").to_i).to_s
      request = Request.new(method: method, path: path, headers: headers, body: body, port: client.peeraddr[1],
                            at: Process.clock_gettime(Process::CLOCK_MONOTONIC))
      @recorded_lock.synchronize { @recorded << request }
      @requests << request
      status, text, content_type = answer_for(request)
      return false if status.nil?

      connection = @keep_alive ? "keep-alive" : "close"
      client.write("HTTP/1.1 #{status} Scripted\r\nContent-Type: #{content_type}\r\n" \
                   "Content-Length: #{text.bytesize}\r\nConnection: #{connection}\r\n\r\n#{text}")
      true
    end

    def answer_for(request)
      return @responses.pop unless @responder

      status, body = @responder.call(request)
      status && [status, encode(body), "application/json"]
    end
  end
end

# frozen_string_literal: true

require "socket"
require "json"

module TaskerWorkerTest
  # A tiny HTTP/1.1 server on a free loopback port (Ruby 3.1 ships no WEBrick): it records each
  # request and answers with the next scripted response. One request per connection.
  class StubHttpServer
    Request = Struct.new(:method, :path, :headers, :body, keyword_init: true) do
      def json
        JSON.parse(body)
      end
    end

    attr_reader :requests

    def initialize
      @server = TCPServer.new("127.0.0.1", 0)
      @responses = Queue.new
      @requests = Queue.new
      @thread = Thread.new { serve }
      @thread.report_on_exception = false
    end

    def base_url
      "http://127.0.0.1:#{@server.addr[1]}"
    end

    # Scripts the next response.
    def respond(status, body = nil, content_type: "application/json")
      text = body.is_a?(String) || body.nil? ? body.to_s : JSON.generate(body)
      @responses << [status, text, content_type]
      self
    end

    def close
      @thread.kill
      @server.close
    end

    private

    def serve
      loop do
        client = @server.accept
        handle(client)
      ensure
        client&.close
      end
    end

    def handle(client)
      method, path = client.gets.to_s.split(" ", 3)
      headers = {}
      while (line = client.gets) && line != "\r\n"
        name, value = line.split(":", 2)
        headers[name.strip.downcase] = value.to_s.strip
      end
      body = client.read(headers.fetch("content-length", "0").to_i).to_s
      @requests << Request.new(method: method, path: path, headers: headers, body: body)
      status, text, content_type = @responses.pop
      client.write("HTTP/1.1 #{status} Scripted\r\nContent-Type: #{content_type}\r\n" \
                   "Content-Length: #{text.bytesize}\r\nConnection: close\r\n\r\n#{text}")
    end
  end
end

# frozen_string_literal: true

require "ffi-rzmq"

module TaskerWorker
  # The worker's one DEALER socket (spec §2): connected, never bound, no routing identity, linger
  # 0 (held results live in the worker, not in ZeroMQ's queues), every message one frame. Owned
  # by the worker's loop thread alone (ZeroMQ sockets are not thread-safe).
  class Connection
    # A memory guard well above the largest `max_frame_bytes` (spec §2.1): libzmq drops the
    # connection on a larger message.
    MAX_MESSAGE_BYTES = 4 * Protocol::MAX_MAX_FRAME_BYTES

    attr_reader :endpoint

    def initialize(context, endpoint)
      @endpoint = endpoint
      @socket = context.socket(ZMQ::DEALER) or raise Error, "cannot create a ZeroMQ DEALER socket: #{zmq_error}"
      check(@socket.setsockopt(ZMQ::LINGER, 0), "set ZMQ_LINGER")
      check(@socket.setsockopt(ZMQ::MAXMSGSIZE, MAX_MESSAGE_BYTES), "set ZMQ_MAXMSGSIZE")
      return if ZMQ::Util.resultcode_ok?(@socket.connect(endpoint))

      message = "cannot connect to #{endpoint.inspect}: #{zmq_error}"
      close
      raise ConfigurationError, message
    end

    # The ffi-rzmq socket, for polling.
    def socket
      @socket
    end

    # Queues one frame without blocking; false if ZeroMQ refused it (its queue is full).
    def send_frame(frame)
      ZMQ::Util.resultcode_ok?(@socket.send_string(frame, ZMQ::DONTWAIT))
    end

    # The frames of the next waiting message (an Array of binary Strings; more than one is a
    # multipart message, a protocol error), or nil if none is waiting.
    def receive
      parts = []
      rc = @socket.recv_strings(parts, ZMQ::DONTWAIT)
      ZMQ::Util.resultcode_ok?(rc) ? parts : nil
    end

    def close
      @socket&.close
      @socket = nil
    end

    private

    def check(result, what)
      raise Error, "cannot #{what}: #{zmq_error}" unless ZMQ::Util.resultcode_ok?(result)
    end

    def zmq_error
      ZMQ::Util.error_string
    end
  end
end

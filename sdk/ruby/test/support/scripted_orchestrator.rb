# frozen_string_literal: true

require "ffi-rzmq"
require "json"
require "securerandom"

module TaskerWorkerTest
  # A test double of the orchestrator's side of the protocol, scripted by each test: one ROUTER
  # bound on a free loopback TCP port. Every frame a worker sends is decoded with the SDK's
  # worker→orchestrator decoder, so a worker that sends an invalid message fails the test.
  class ScriptedOrchestrator
    # One message from a worker: the connection's routing identity, the decoded message, the
    # raw frame.
    Received = Struct.new(:identity, :message, :frame, keyword_init: true)

    Protocol = TaskerWorker::Protocol

    attr_reader :endpoint, :orchestrator_id

    def initialize(orchestrator_id: "orchestrator-test")
      @orchestrator_id = orchestrator_id
      @context = ZMQ::Context.new
      @router = @context.socket(ZMQ::ROUTER)
      @router.setsockopt(ZMQ::LINGER, 0)
      check(@router.bind("tcp://127.0.0.1:*"), "bind")
      endpoint = []
      check(@router.getsockopt(ZMQ::LAST_ENDPOINT, endpoint), "read the endpoint")
      @endpoint = endpoint.first.to_s.delete("\0")
      @poller = ZMQ::Poller.new
      @poller.register_readable(@router)
      @inbox = []
      @heartbeats_to = {}
      @next_heartbeat_at = nil
    end

    # The next message from any worker, waiting up to `timeout` seconds; nil if none came.
    # Raises if the frame is not a valid worker message or not exactly [identity, payload].
    # While it waits it heartbeats, like a real orchestrator, to every welcomed connection.
    def receive(timeout: 5)
      deadline = now + timeout
      loop do
        return @inbox.shift unless @inbox.empty?

        left = deadline - now
        return nil if left <= 0

        pump(left)
      end
    end

    # Reads what has arrived into the inbox and sends due heartbeats, waiting at most `timeout`
    # seconds for something to arrive.
    def pump(timeout)
      send_due_heartbeats
      wait = [timeout, (@next_heartbeat_at ? @next_heartbeat_at - now : timeout)].min
      @poller.poll([(wait * 1000).ceil, 0].max)
      loop do
        parts = []
        break unless ZMQ::Util.resultcode_ok?(@router.recv_strings(parts, ZMQ::DONTWAIT))
        raise "expected [identity, payload], got #{parts.length} frames: #{parts.inspect}" unless parts.length == 2

        identity, frame = parts
        @inbox << Received.new(identity: identity, message: Protocol.decode_worker_message(frame), frame: frame)
      end
      send_due_heartbeats
    end

    # Stops heartbeating (to play an orchestrator that went silent or died).
    def go_silent
      @heartbeats_to.clear
      @next_heartbeat_at = nil
    end

    # The next message whose type is not in `skip`; raises if none comes within `timeout`.
    def next_message(timeout: 5, skip: ["heartbeat"])
      deadline = now + timeout
      loop do
        received = receive(timeout: [deadline - now, 0].max)
        raise "no message from the worker within #{timeout} s" unless received
        return received unless skip.include?(received.message.message_type)
      end
    end

    # The next message, which must be of `type` (heartbeats skipped unless expected).
    def expect(type, timeout: 5, skip: ["heartbeat"])
      received = next_message(timeout: timeout, skip: skip - [type])
      unless received.message.message_type == type
        raise "expected #{type} from the worker, got #{received.message.message_type}: #{received.frame}"
      end

      received
    end

    # Waits for `hello`, answers `welcome`; returns the Received hello.
    def handshake(timeout: 5, **welcome_options)
      hello = expect("hello", timeout: timeout)
      welcome(hello.identity, hello.message.worker_id, **welcome_options)
      hello
    end

    def welcome(identity, worker_id, heartbeat_interval_ms: 100, liveness: 20,
                max_frame_bytes: Protocol::DEFAULT_MAX_FRAME_BYTES, max_steps_per_batch: 100)
      @heartbeats_to[identity] = heartbeat_interval_ms / 1000.0
      @next_heartbeat_at ||= now + (heartbeat_interval_ms / 1000.0)
      send_message(identity, "welcome", worker_id: worker_id, orchestrator_id: @orchestrator_id,
                                        heartbeat_interval_ms: heartbeat_interval_ms, liveness: liveness,
                                        max_frame_bytes: max_frame_bytes, max_steps_per_batch: max_steps_per_batch)
    end

    # Sends a step_batch of `steps` (see .step); returns its batch_id.
    def step_batch(identity, steps, batch_id: SecureRandom.uuid)
      send_message(identity, "step_batch", batch_id: batch_id, steps: steps)
      batch_id
    end

    # Acknowledges the results `received` (Received partial results and batch completions).
    def ack(identity, *received, outcome: "applied")
      acks = received.map do |item|
        message = item.message
        { batch_id: message.batch_id, message_kind: message.message_type,
          step_id: message.message_type == "partial_result" ? message.step_id : nil, outcome: outcome }
      end
      send_message(identity, "result_ack", acks: acks)
    end

    def heartbeat(identity)
      send_message(identity, "heartbeat", orchestrator_id: @orchestrator_id, timestamp: "2025-01-23T19:57:52.123Z")
    end

    # Sends a message of `message_type` with `fields` (the envelope is added).
    def send_message(identity, message_type, **fields)
      send_frames(identity, JSON.generate({ message_type: message_type, protocol_version: "1.0" }.merge(fields)))
    end

    # Sends raw frames after the identity (one frame is one message; more is a multipart message).
    def send_frames(identity, *frames)
      parts = [identity, *frames]
      check(@router.send_strings(parts), "send")
    end

    def close
      @router.close
      @context.terminate
    end

    # A step request for a step_batch.
    def self.step(step_id, handler_class: "tasker.test", task_id: 1, step_name: "step_#{step_id}", handler_config: {},
                  task_context: {}, previous_results: {}, attempt: 1, retry_limit: 3, timeout_ms: nil)
      { step_id: step_id, task_id: task_id, step_name: step_name, handler_class: handler_class,
        handler_config: handler_config, task_context: task_context, previous_results: previous_results,
        metadata: { attempt: attempt, retry_limit: retry_limit, timeout_ms: timeout_ms,
                    idempotency_key: "#{step_id}:#{attempt}" } }
    end

    private

    def send_due_heartbeats
      return unless @next_heartbeat_at && now >= @next_heartbeat_at

      @heartbeats_to.each_key { |identity| heartbeat(identity) }
      @next_heartbeat_at = now + @heartbeats_to.values.min
    end

    def now
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end

    def check(result, what)
      raise "cannot #{what}: #{ZMQ::Util.error_string}" unless ZMQ::Util.resultcode_ok?(result)
    end
  end
end

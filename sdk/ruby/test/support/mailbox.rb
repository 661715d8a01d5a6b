# frozen_string_literal: true

module TaskerWorkerTest
  # A thread-safe queue whose `pop` waits at most `timeout` seconds (Ruby 3.1's Queue cannot).
  class Mailbox
    def initialize
      @items = []
      @mutex = Mutex.new
      @arrived = ConditionVariable.new
    end

    def push(item)
      @mutex.synchronize do
        @items << item
        @arrived.broadcast
      end
      self
    end
    alias << push

    # The oldest item, waiting up to `timeout` seconds; raises Timeout if none arrives.
    def pop(timeout:)
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
      @mutex.synchronize do
        while @items.empty?
          left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
          raise Timeout, "nothing arrived within #{timeout} s" if left <= 0

          @arrived.wait(@mutex, left)
        end
        @items.shift
      end
    end

    def size
      @mutex.synchronize { @items.size }
    end

    # Raised by pop when nothing arrives in time.
    class Timeout < StandardError; end
  end

  # Handlers that block until the test releases them, recording when they start: tests of
  # capacity, cancellation, timeouts and shutdown hold steps running with it.
  class Gate
    attr_reader :started

    def initialize
      @started = Mailbox.new
      @releases = Hash.new { |hash, step_id| hash[step_id] = Mailbox.new }
      @mutex = Mutex.new
      @running = 0
      @max_running = 0
    end

    # The most steps that ran at once.
    attr_reader :max_running

    # A handler object: records the start, waits for release(step id), returns {"released" => id}.
    def handler
      gate = self
      Object.new.tap do |handler|
        handler.define_singleton_method(:process) { |_task, _sequence, step| gate.pass(step) }
      end
    end

    def pass(step)
      @mutex.synchronize do
        @running += 1
        @max_running = [@max_running, @running].max
      end
      @started << step.id
      release_box(step.id).pop(timeout: 30)
      { "released" => step.id }
    ensure
      @mutex.synchronize { @running -= 1 }
    end

    def release(step_id)
      release_box(step_id) << true
    end

    private

    def release_box(step_id)
      @mutex.synchronize { @releases[step_id] }
    end
  end
end

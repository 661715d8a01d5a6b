# frozen_string_literal: true

module TaskerWorker
  # Counters of a worker since it started, for logs, metrics and tests. Written by the worker's
  # loop, readable from any thread.
  class WorkerStats
    COUNTERS = %i[
      steps_started steps_completed steps_failed steps_handed_back batches_completed
      results_resent results_acknowledged results_dropped rejected_frames errors_received
      hellos_sent reconnects heartbeats_sent
    ].freeze

    def initialize
      @mutex = Mutex.new
      @counts = COUNTERS.to_h { |name| [name, 0] }
      @rejected_by_code = Hash.new(0)
      @gauges = { results_unacknowledged: 0, registered: false }
    end

    def bump(counter, by = 1)
      @mutex.synchronize { @counts[counter] += by }
    end

    # Counts one rejected inbound frame under its error code.
    def reject(code)
      @mutex.synchronize do
        @counts[:rejected_frames] += 1
        @rejected_by_code[code] += 1
      end
    end

    def set(gauge, value)
      @mutex.synchronize { @gauges[gauge] = value }
    end

    def [](name)
      @mutex.synchronize { @counts.fetch(name) { @gauges.fetch(name) } }
    end

    # A snapshot: every counter and gauge, and `rejected_frames_by_code` (code => count).
    def to_h
      @mutex.synchronize do
        @counts.merge(@gauges).merge(rejected_frames_by_code: @rejected_by_code.dup)
      end
    end
  end
end

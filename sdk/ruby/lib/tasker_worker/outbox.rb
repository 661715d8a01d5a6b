# frozen_string_literal: true

module TaskerWorker
  # Every result the worker has produced and the orchestrator has not acknowledged yet, in the
  # order produced (spec §9.3). Each is kept as its exact encoded frame, so a re-sent partial
  # result keeps its `sequence` and every other field.
  class Outbox
    # One held result. `last_sent` is when it was last handed to the socket on the current
    # session (nil: not yet, or not since the last (re)registration or a failed send).
    Held = Struct.new(:key, :frame, :last_sent, :ever_sent, keyword_init: true)

    def initialize
      @held = {}
      @per_batch = Hash.new(0)
    end

    # Holds `frame` under `key` (replacing an older frame with the same key, at the end).
    def hold(key, frame)
      release(key)
      @per_batch[key.batch_id] += 1
      @held[key] = Held.new(key: key, frame: frame, last_sent: nil, ever_sent: false)
    end

    # Drops the result held under `key`; whether there was one.
    def release(key)
      return false unless @held.delete(key)

      @per_batch[key.batch_id] -= 1
      @per_batch.delete(key.batch_id) if @per_batch[key.batch_id].zero?
      true
    end

    def [](key)
      @held[key]
    end

    # Every held result, oldest first.
    def each(&block)
      @held.each_value(&block)
    end

    # Whether any result of `batch_id` is held.
    def holds_batch?(batch_id)
      @per_batch.key?(batch_id)
    end

    # The `[batch_id, step_id]` of every held partial result.
    def held_steps
      @held.keys.select(&:step_id).map { |key| [key.batch_id, key.step_id] }
    end

    # Marks every held result as not sent on the current session (after a reconnect).
    def mark_all_unsent
      @held.each_value { |held| held.last_sent = nil }
    end

    def size
      @held.size
    end

    def empty?
      @held.empty?
    end
  end
end

# frozen_string_literal: true

require "test_helper"

# Every file of docs/protocol/vectors/ against this SDK's codec (spec §16): valid messages decode
# and re-encode to their canonical form, invalid frames are rejected with exactly the expected
# code and a message containing the expected detail, and the worker-side builders produce the
# shapes of the valid worker messages.
class ProtocolVectorsTest < Minitest::Test
  Protocol = TaskerWorker::Protocol

  VALID = Dir[File.join(TaskerWorkerTest::VECTORS_DIR, "valid", "*.json")].sort.to_h do |path|
    [File.basename(path, ".json"), JSON.parse(File.read(path))]
  end
  INVALID = Dir[File.join(TaskerWorkerTest::VECTORS_DIR, "invalid", "*.json")].sort.to_h do |path|
    [File.basename(path, ".json"), JSON.parse(File.read(path))]
  end

  def self.decode(direction, frame, limits = Protocol::Limits.default)
    case direction
    when "orchestrator_to_worker" then Protocol.decode_orchestrator_message(frame, limits)
    when "worker_to_orchestrator" then Protocol.decode_worker_message(frame, limits)
    else raise ArgumentError, "unknown direction #{direction.inspect}"
    end
  end

  def test_the_vectors_are_found
    assert_operator VALID.size, :>=, 40, "valid vectors in #{TaskerWorkerTest::VECTORS_DIR}"
    assert_operator INVALID.size, :>=, 100, "invalid vectors in #{TaskerWorkerTest::VECTORS_DIR}"
    assert(VALID.values.any? { |vector| vector["direction"] == "orchestrator_to_worker" })
    assert(INVALID.values.any? { |vector| vector["direction"] == "orchestrator_to_worker" })
  end

  VALID.each do |name, vector|
    define_method("test_valid_#{name}") do
      message = self.class.decode(vector["direction"], JSON.generate(vector["message"]))
      assert_equal vector["message"]["message_type"], message.message_type
      canonical = vector.fetch("canonical", vector["message"])
      assert_equal canonical, JSON.parse(Protocol.encode(message)), "re-encoded #{name}"
      assert_equal canonical, JSON.parse(Protocol.encode(self.class.decode(vector["direction"], JSON.pretty_generate(vector["message"])))),
                   "pretty-printed #{name}"
    end
  end

  INVALID.each do |name, vector|
    define_method("test_invalid_#{name}") do
      frame = vector.key?("raw_hex") ? [vector["raw_hex"]].pack("H*") : vector.fetch("raw").encode(Encoding::UTF_8).b
      defaults = Protocol::Limits.default
      overrides = vector.fetch("limits", {})
      limits = Protocol::Limits.new(
        max_frame_bytes: overrides.fetch("max_frame_bytes", defaults.max_frame_bytes),
        max_steps_per_batch: overrides.fetch("max_steps_per_batch", defaults.max_steps_per_batch)
      )
      error = assert_raises(Protocol::DecodeError, "#{name} must be rejected") do
        self.class.decode(vector["direction"], frame, limits)
      end
      assert_equal vector["expected_error"], error.code, "#{name}: #{error.message}"
      assert_includes error.message, vector["expected_detail"], name
    end
  end

  # The builders the worker uses produce exactly the keys of the valid vectors, with values of
  # the same JSON types (an optional field may be null where a vector has a value).
  def test_builders_reproduce_the_shapes_of_the_valid_worker_vectors
    builders = Protocol::Builders
    batch_id = "0195b4ba-8d3a-7f12-9c4e-6a1d2b3c4d5e"
    ref = Protocol::StepRef.new(batch_id: batch_id, step_id: 8127)
    error = builders.step_error(message: "carrier API timed out", error_class: "Net::ReadTimeout", retryable: true,
                                retry_after_ms: 5000, backtrace: ["a.rb:1:in `x'"])
    built = {
      "hello" => builders.hello(worker_id: "w-1", name: "workers", handler_classes: ["A::B"], capacity: 8,
                                heartbeat_interval_ms: 1000, in_flight: [ref]),
      "heartbeat" => builders.heartbeat(worker_id: "w-1", in_flight: 3, free_capacity: 5),
      "partial_result" => builders.partial_result(batch_id: batch_id, step_id: 8128, attempt: 2, worker_id: "w-1",
                                                  sequence: 2, execution_time_ms: 30_012, error: error),
      "batch_completion" => builders.batch_completion(
        batch_id: batch_id, worker_id: "w-1",
        step_summaries: [Protocol::StepSummary.new(step_id: 8127, status: "completed"),
                         Protocol::StepSummary.new(step_id: 8128, status: "failed")]
      ),
      "health_reply" => builders.health_reply(request_id: batch_id, worker_id: "w-1", status: "healthy", in_flight: 3,
                                              free_capacity: 5, uptime_ms: 10, details: { "threads" => 8 }),
      "goodbye" => builders.goodbye(worker_id: "w-1", reason: "SIGTERM", handed_back: [ref]),
      "error" => builders.error_report(code: "invalid_field_value", message: "field `x` has an invalid value",
                                       offending_message_type: "step_batch")
    }
    completed = builders.partial_result(batch_id: batch_id, step_id: 1, attempt: 1, worker_id: "w-1", sequence: 1,
                                        execution_time_ms: 3, output: { "tracking_number" => "1Z" })

    worker_vectors = VALID.select { |_, vector| vector["direction"] == "worker_to_orchestrator" }
    assert_equal built.keys.sort, worker_vectors.values.map { |vector| vector["message"]["message_type"] }.uniq.sort

    worker_vectors.each do |name, vector|
      expected = vector.fetch("canonical", vector["message"])
      message = name == "partial_result.completed" ? completed : built.fetch(expected["message_type"])
      wire = JSON.parse(Protocol.encode(message))
      assert_same_shape(expected, wire, name)
      # Every built message is itself valid.
      Protocol.decode_worker_message(Protocol.encode(message))
    end
  end

  private

  def assert_same_shape(expected, actual, path)
    assert_equal expected.keys.sort, actual.keys.sort, "keys of #{path}"
    expected.each do |key, value|
      next if value.nil? || actual[key].nil?
      next if %w[output details].include?(key) # opaque payloads

      assert_equal json_kind(value), json_kind(actual[key]), "type of #{path}.#{key}"
      assert_same_shape(value, actual[key], "#{path}.#{key}") if value.is_a?(Hash)
      if value.is_a?(Array) && value.first.is_a?(Hash) && actual[key].first.is_a?(Hash)
        assert_same_shape(value.first, actual[key].first, "#{path}.#{key}[0]")
      end
    end
  end

  def json_kind(value)
    case value
    when true, false then :boolean
    when Integer then :integer
    when Numeric then :number
    else value.class
    end
  end
end

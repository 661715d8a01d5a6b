# frozen_string_literal: true

require "test_helper"

# Codec rules the shared vectors do not reach: Ruby's JSON parser leniencies, timestamps,
# canonical timestamp output and text fitting.
class CodecTest < Minitest::Test
  Protocol = TaskerWorker::Protocol

  HEARTBEAT = '{"message_type":"heartbeat","protocol_version":"1.0","orchestrator_id":"o-1",' \
              '"timestamp":"2025-01-23T19:57:52.123Z"%s}'

  def decode(text)
    Protocol.decode_orchestrator_message(text)
  end

  def assert_rejected(code, detail, text)
    error = assert_raises(Protocol::DecodeError) { decode(text) }
    assert_equal code, error.code, error.message
    assert_includes error.message, detail
    error
  end

  def test_ruby_json_leniencies_are_invalid_json
    assert_rejected "invalid_json", "JSON", format(HEARTBEAT, ',"x":1 /* comment */')
    assert_rejected "invalid_json", "JSON", format(HEARTBEAT, ',"x":"\\x"')
    assert_rejected "invalid_json", "JSON", format(HEARTBEAT, ',"x":"\\u12"')
    assert_rejected "invalid_json", "JSON", format(HEARTBEAT, ',"x":"\\udc00"')
    assert_rejected "invalid_json", "JSON", format(HEARTBEAT, ',"\\udc00":1')
    assert_rejected "invalid_json", "JSON", format(HEARTBEAT, ',"x":1e400')
    assert_rejected "invalid_json", "JSON", format(HEARTBEAT, ",\"x\":1#{'0' * 400}")
    assert_rejected "invalid_json", "JSON", format(HEARTBEAT, ',"x":1,')
    assert_rejected "invalid_json", "JSON", format(HEARTBEAT, ',"x":"\\uD800\\u0041"')
    assert_rejected "invalid_json", "JSON", format(HEARTBEAT, ',"\\ud800x":1')
  end

  # Differential testing against the Rust decoder found these: serde_json reads `-0` as the
  # float -0.0, so it is not an integer, and keeps its sign in payloads.
  def test_negative_zero_is_a_float_as_in_serde_json
    error = assert_raises(Protocol::DecodeError) do
      Protocol.decode_worker_message('{"message_type":"heartbeat","protocol_version":"1.0","worker_id":"w",' \
                                     '"in_flight":-0,"free_capacity":1,"timestamp":"2025-01-23T19:57:52Z"}')
    end
    assert_equal ["invalid_field_type", "in_flight"], [error.code, error.field]
    assert_includes error.message, "found number"

    message = Protocol.decode_worker_message(
      '{"message_type":"partial_result","protocol_version":"1.0","batch_id":"0195b4ba-8d3a-7f12-9c4e-6a1d2b3c4d5e",' \
      '"step_id":1,"attempt":1,"status":"completed","output":[-0,[-0],1e-0,-0e0,"-0"],"worker_id":"w","sequence":1,' \
      '"timestamp":"2025-01-23T19:57:52Z","execution_time_ms":0}'
    )
    assert_equal '[-0.0,[-0.0],1.0,-0.0,"-0"]', JSON.generate(message.output)
  end

  def test_well_formed_escapes_and_numbers_are_kept
    message = Protocol.decode_worker_message(
      '{"message_type":"partial_result","protocol_version":"1.0","batch_id":"0195b4ba-8d3a-7f12-9c4e-6a1d2b3c4d5e",' \
      '"step_id":1,"attempt":1,"status":"completed","output":{"s":"a\/b\\\\\ud83d\ude80\u0000","big":18446744073709551615,' \
      '"neg":-9223372036854775808,"f":-0.0},"worker_id":"w","sequence":1,"timestamp":"2025-01-23T19:57:52Z",' \
      '"execution_time_ms":0}'
    )
    assert_equal "a/b\\🚀\u0000", message.output["s"]
    assert_equal 18_446_744_073_709_551_615, message.output["big"]
    assert_equal(-9_223_372_036_854_775_808, message.output["neg"])
  end

  def test_nesting_is_counted_before_parsing_and_outside_strings_only
    deep = "#{'[' * 64}]"
    assert_rejected "limit_exceeded", "nesting depth", format(HEARTBEAT, ",\"x\":#{deep}")
    brackets_in_string = format(HEARTBEAT, ",\"x\":\"#{'[' * 100}\\\"#{'{' * 100}\"")
    assert_equal "o-1", decode(brackets_in_string).orchestrator_id
    # Nesting is step 3, JSON syntax step 4: a deep frame that is also not JSON is too deep.
    assert_rejected "limit_exceeded", "nesting depth", "/* */ #{'[' * 65}"
  end

  def test_timestamps_follow_the_strict_rfc3339_profile
    accepted = {
      "2025-01-23T19:57:52Z" => "2025-01-23T19:57:52Z",
      "2025-01-23T19:57:52.1Z" => "2025-01-23T19:57:52.100Z",
      "2025-01-23T19:57:52.123456789Z" => "2025-01-23T19:57:52.123456789Z",
      "2025-01-23T19:57:52.1234Z" => "2025-01-23T19:57:52.123400Z",
      "2025-01-23T21:57:52.123+02:00" => "2025-01-23T19:57:52.123Z",
      "2025-01-23T17:57:52-02:00" => "2025-01-23T19:57:52Z",
      "0001-01-01T00:00:00Z" => "0001-01-01T00:00:00Z",
      "2024-02-29T23:59:59Z" => "2024-02-29T23:59:59Z"
    }
    accepted.each do |text, canonical|
      time = Protocol::Timestamp.parse(text)
      refute_nil time, text
      assert_equal canonical, Protocol::Timestamp.format(time), text
    end
    %w[2025-01-23T19:57:52 2025-01-23t19:57:52z 2025-01-23T19:57:60Z 2025-13-23T19:57:52Z
       2025-02-30T19:57:52Z 2025-02-29T00:00:00Z 2025-01-23T24:00:00Z 0000-01-01T00:00:00Z
       2025-01-23T19:57:52.Z 2025-01-23T19:57:52.1234567890Z 2025-01-23T19:57:52+0200
       2025-01-23T19:57:52+02 2025-01-23T19:57:52+24:00 1737662272 yesterday].each do |text|
      assert_nil Protocol::Timestamp.parse(text), text
    end
    assert_nil Protocol::Timestamp.parse("2025-01-23 19:57:52Z")
    assert_nil Protocol::Timestamp.parse("２０２５-01-23T19:57:52Z")
  end

  def test_versions_are_two_numbers_without_leading_zeros
    ["1.0", "1.12", "0.0"].each { |text| refute_nil Protocol::Decoder.parse_version(text), text }
    ["", "1", "1.", ".1", "v1.0", "01.0", "1.00", "1.0.0", "+1.0", "-1.0", "1.0 ", " 1.0", "1,0",
     "4294967296.0"].each { |text| assert_nil Protocol::Decoder.parse_version(text), text }
  end

  def test_free_text_is_cut_at_character_boundaries
    assert_equal "abc", Protocol.truncate_to_bytes("abc", 5)
    assert_equal "ab", Protocol.truncate_to_bytes("abc", 2)
    assert_equal "a", Protocol.truncate_to_bytes("aé", 2)
    assert_equal "🚀", Protocol.truncate_to_bytes("🚀🚀", 7)
    assert_equal "", Protocol.truncate_to_bytes("🚀", 0)
    error = Protocol::Builders.step_error(message: "é" * Protocol::MAX_TEXT_BYTES, error_class: "x" * 300,
                                          retryable: false, backtrace: ["f" * 3000] * 120)
    assert_equal Protocol::MAX_TEXT_BYTES, error.message.bytesize
    assert_equal 255, error.error_class.bytesize
    assert_equal 100, error.backtrace.length
    assert(error.backtrace.all? { |line| line.bytesize == 2048 })
  end

  def test_the_reply_to_a_rejected_frame_names_what_could_be_read
    frame = '{"message_type":"step_batch","protocol_version":"1.0","batch_id":"0195b4ba-8d3a-7f12-9c4e-6a1d2b3c4d5e",' \
            '"step_id":7,"steps":[]}'
    error = assert_raises(Protocol::DecodeError) { decode(frame) }
    report = Protocol::Builders.rejection_report(frame, error)
    assert_equal "invalid_field_value", report.code
    assert_equal "step_batch", report.offending_message_type
    assert_equal "0195b4ba-8d3a-7f12-9c4e-6a1d2b3c4d5e", report.batch_id
    assert_equal 7, report.step_id

    garbage = "not json"
    error = assert_raises(Protocol::DecodeError) { decode(garbage) }
    report = Protocol::Builders.rejection_report(garbage, error)
    assert_equal ["invalid_json", nil, nil, nil],
                 [report.code, report.offending_message_type, report.batch_id, report.step_id]

    bad_error = '{"message_type":"error","protocol_version":"1.0","code":"Bad-Code","message":"x"}'
    error = assert_raises(Protocol::DecodeError) { decode(bad_error) }
    assert_nil Protocol::Builders.rejection_report(bad_error, error), "an error is never answered with an error"
  end
end

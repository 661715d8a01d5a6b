# frozen_string_literal: true

module TaskerWorker
  module Protocol
    # Why a received frame was rejected. `code` is one of the spec's stable error codes (§6.2)
    # and is what the test vectors' `expected_error` names; the message names the offending
    # field as a path (`steps[0].metadata.attempt`) or the reason, worded like the Rust crate's.
    class DecodeError < TaskerWorker::Error
      # The stable error code, e.g. "missing_field".
      attr_reader :code
      # The path of the offending field, for errors about one field; nil otherwise.
      attr_reader :field

      def initialize(code, message, field: nil)
        super(message)
        @code = code
        @field = field
      end

      # Errors raised before the frame could be read as a JSON object: nothing can be read back
      # from such a frame to name the rejected message.
      UNPARSED_CODES = %w[frame_too_large multipart_message invalid_json not_an_object].freeze

      # Whether the frame was rejected before it was parsed into an object.
      def unparsed?
        UNPARSED_CODES.include?(code) || (code == "limit_exceeded" && field.nil?)
      end

      class << self
        def frame_too_large(size, max)
          new("frame_too_large", "frame of #{size} bytes exceeds max_frame_bytes #{max}")
        end

        def multipart(frames)
          new("multipart_message",
              "message has #{frames} frames; a message must be exactly one frame holding a JSON object")
        end

        def invalid_json(reason)
          new("invalid_json", "frame is not valid JSON: #{reason}")
        end

        def nesting_too_deep
          new("limit_exceeded", "message nesting depth exceeds the maximum of #{MAX_NESTING_DEPTH} levels")
        end

        def not_an_object(found)
          new("not_an_object", "message must be a JSON object, found #{found}")
        end

        def missing_field(field)
          new("missing_field", "missing required field `#{field}`", field: field)
        end

        def invalid_field_type(field, expected, found)
          new("invalid_field_type", "field `#{field}` must be #{expected}, found #{found}", field: field)
        end

        def invalid_field_value(field, reason)
          new("invalid_field_value", "field `#{field}` has an invalid value: #{reason}", field: field)
        end

        def limit_exceeded(field, reason)
          new("limit_exceeded", "field `#{field}` exceeds a protocol limit: #{reason}", field: field)
        end

        def inconsistent(field, reason)
          new("inconsistent_message", "inconsistent message: field `#{field}` #{reason}", field: field)
        end

        def unsupported_version(received)
          new("unsupported_protocol_version",
              "unsupported protocol_version \"#{received}\": this peer speaks protocol #{VERSION} " \
              "and accepts only major version #{MAJOR_VERSION}")
        end

        def unknown_message_type(message_type, direction)
          new("unknown_message_type", "unknown message_type \"#{message_type}\" for #{direction} messages")
        end
      end
    end
  end
end

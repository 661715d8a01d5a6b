# frozen_string_literal: true

require "json"
require "strscan"

module TaskerWorker
  module Protocol
    # Steps 1–5 of the validation order (spec §6.1): size, UTF-8, nesting depth, JSON syntax,
    # object. Ruby's JSON parser is more lenient than RFC 8259 (it accepts `/* comments */`,
    # unknown escapes such as `\x`, unpaired low surrogates, and numbers too large for a Float),
    # so one pass over the raw text counts the nesting depth (before parsing, as §3.8 requires)
    # and notes the first of those leniencies; a walk after parsing catches the rest.
    module FrameParser
      # Anything outside strings that is not structural or scalar text.
      OUTSIDE_STRING = %r{[^"\[\]{}/]+}.freeze
      INSIDE_STRING = /[^"\\]+/.freeze
      SIMPLE_ESCAPES = ['"', "\\", "/", "b", "f", "n", "r", "t"].freeze

      module_function

      # Parses `frame` (a String of bytes) into a Hash, or raises DecodeError.
      def parse_object(frame, limits)
        bytes = frame.b
        raise DecodeError.frame_too_large(bytes.bytesize, limits.max_frame_bytes) if bytes.bytesize > limits.max_frame_bytes

        text = bytes.force_encoding(Encoding::UTF_8)
        raise DecodeError.invalid_json("not valid UTF-8") unless text.valid_encoding?

        too_deep, leniency, negative_zeros = scan(text)
        raise DecodeError.nesting_too_deep if too_deep
        raise DecodeError.invalid_json(leniency) if leniency

        text = write_negative_zeros_as_floats(text, negative_zeros) unless negative_zeros.empty?

        value = begin
          JSON.parse(text, max_nesting: false, allow_nan: false, create_additions: false)
        rescue JSON::ParserError => e
          raise DecodeError.invalid_json(e.message.lines.first.to_s.strip[0, 200])
        end
        reject_unrepresentable(value)
        raise DecodeError.not_an_object(Protocol.json_type_name(value)) unless value.is_a?(Hash)

        value
      end

      # Returns [too_deep, first_leniency, negative_zeros]: whether arrays and objects nest
      # deeper than MAX_NESTING_DEPTH (brackets inside strings do not count; the same rule as the
      # Rust crate's, also on text that is not JSON), the first non-RFC construct seen, and the
      # byte offsets just after each `-0` number written without fraction or exponent.
      def scan(text)
        scanner = StringScanner.new(text)
        depth = 0
        leniency = nil
        negative_zeros = []
        until scanner.eos?
          start = scanner.pos
          note_negative_zeros(scanner.scan(OUTSIDE_STRING), start, negative_zeros)
          char = scanner.getch
          case char
          when "[", "{"
            depth += 1
            return [true, leniency, negative_zeros] if depth > MAX_NESTING_DEPTH
          when "]", "}"
            depth -= 1 if depth.positive?
          when "/"
            leniency ||= "a comment or stray '/' outside a string"
          when '"'
            leniency = scan_string(scanner, leniency)
          end
        end
        [false, leniency, negative_zeros]
      end

      # serde_json reads `-0` as the float -0.0 (so an integer field holding it is
      # `invalid_field_type`, and a payload keeps its sign); Ruby reads the integer 0. The
      # offsets collected here let parse_object write those as `-0.0` before parsing.
      def note_negative_zeros(chunk, start, offsets)
        return unless chunk&.include?("-0")

        chunk.b.scan(/(?<![0-9eE.+-])-0(?![0-9.eE])/) { offsets << (start + Regexp.last_match.end(0)) }
      end

      # Skips the rest of a string after its opening quote; returns the leniency seen so far.
      def scan_string(scanner, leniency)
        loop do
          scanner.skip(INSIDE_STRING)
          char = scanner.getch
          return leniency if char.nil? || char == '"'

          escape = scanner.getch
          return leniency if escape.nil?
          next if SIMPLE_ESCAPES.include?(escape)

          leniency ||= escape == "u" ? unicode_escape_leniency(scanner) : "invalid escape \\#{escape}"
        end
      end

      # Reads the four hex digits of a `\u` escape (and the low surrogate a high one needs);
      # returns what is wrong with them, or nil.
      def unicode_escape_leniency(scanner)
        digits = scanner.scan(/\h{4}/) or return "a \\u escape needs four hex digits"
        code = digits.to_i(16)
        return "an unpaired low surrogate escape" if code.between?(0xDC00, 0xDFFF)
        return nil unless code.between?(0xD800, 0xDBFF)
        return nil if scanner.skip(/\\u[dD][c-fC-F]\h{2}/)

        "an unpaired high surrogate escape"
      end

      def write_negative_zeros_as_floats(text, offsets)
        bytes = text.b
        offsets.reverse_each { |offset| bytes.insert(offset, ".0") }
        bytes.force_encoding(Encoding::UTF_8)
      end

      # Rejects what Ruby's parser accepts but JSON cannot represent: strings holding an
      # unpaired surrogate (they come out as invalid UTF-8) and numbers beyond the range of a
      # double (they come out as Infinity).
      def reject_unrepresentable(value)
        case value
        when Hash
          value.each do |key, item|
            raise DecodeError.invalid_json("unpaired surrogate in a string") unless key.valid_encoding?

            reject_unrepresentable(item)
          end
        when Array
          value.each { |item| reject_unrepresentable(item) }
        when String
          raise DecodeError.invalid_json("unpaired surrogate in a string") unless value.valid_encoding?
        when Float
          raise DecodeError.invalid_json("number out of range") unless value.finite?
        when Integer
          raise DecodeError.invalid_json("number out of range") if value.bit_length > 1024
        end
      end
    end

    module_function

    # The JSON type of a parsed value as error messages name it (as the Rust crate does):
    # integers in the signed 64-bit range are `integer`, larger ones up to 2^64-1 are said to be
    # beyond that range, other numbers are `number`.
    def json_type_name(value)
      case value
      when nil then "null"
      when true, false then "boolean"
      when Integer
        if value.between?(I64_MIN, I64_MAX) then "integer"
        elsif value.between?(0, U64_MAX) then "integer beyond the signed 64-bit range"
        else "number"
        end
      when Numeric then "number"
      when String then "string"
      when Array then "array"
      when Hash then "object"
      else value.class.name
      end
    end
  end
end

# frozen_string_literal: true

module TaskerWorker
  module Protocol
    # The string kinds of spec §3.5: byte limit and content rule of each.
    TEXT_KINDS = {
      identifier: MAX_IDENTIFIER_BYTES,
      name: MAX_NAME_BYTES,
      label: MAX_NAME_BYTES,
      prose: MAX_TEXT_BYTES,
      backtrace_entry: MAX_BACKTRACE_ENTRY_BYTES,
      code: MAX_CODE_BYTES
    }.freeze
    IDENTIFIER_PATTERN = /\A[A-Za-z0-9._:@-]+\z/.freeze
    CODE_PATTERN = /\A[a-z][a-z0-9_]*\z/.freeze
    UUID_PATTERN = /\A\h{8}-\h{4}-\h{4}-\h{4}-\h{12}\z/.freeze
    LOWERCASE_UUID_PATTERN = /\A[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\z/.freeze

    # The fields of one JSON object being read, with the path prefix of its fields. Each read
    # runs the checks of spec §6.1 for one field in order: presence, JSON type, size, value.
    class FieldReader
      def initialize(hash, prefix = "")
        @hash = hash
        @prefix = prefix
      end

      # A required field: absent is `missing_field`; a present `null` fails the type check that
      # follows.
      def required(name)
        path = path_of(name)
        raise DecodeError.missing_field(path) unless @hash.key?(name)

        Field.new(@hash[name], path)
      end

      # An optional field, or nil when it is absent or `null`.
      def optional(name)
        value = @hash[name]
        value.nil? ? nil : Field.new(value, path_of(name))
      end

      private

      def path_of(name)
        @prefix.empty? ? name : "#{@prefix}.#{name}"
      end
    end

    # One present field value and its path (`steps[0].metadata.attempt`).
    class Field
      attr_reader :value, :path

      def initialize(value, path)
        @value = value
        @path = path
      end

      # A string of one of the kinds in TEXT_KINDS.
      def text(kind)
        wrong_type("a string") unless value.is_a?(String)
        max = TEXT_KINDS.fetch(kind)
        if value.bytesize > max
          raise DecodeError.limit_exceeded(path, "#{value.bytesize} bytes of UTF-8, more than the maximum of #{max}")
        end

        rule = text_violation(kind)
        raise DecodeError.invalid_field_value(path, rule) if rule

        value
      end

      # An integer in min..max. Non-integers and integers outside the signed 64-bit range are
      # type errors; integers outside min..max are value errors.
      def integer(min, max)
        unless value.is_a?(Integer) && value.between?(I64_MIN, I64_MAX)
          wrong_type("an integer in the signed 64-bit range")
        end
        raise DecodeError.invalid_field_value(path, "#{value} is outside the range #{min}..=#{max}") unless value.between?(min, max)

        value
      end

      # A step or task id: 1..2^63-1.
      def id
        integer(1, I64_MAX)
      end

      # A count: 0..2^32-1.
      def count
        integer(0, U32_MAX)
      end

      # Milliseconds: 0..2^63-1.
      def millis
        integer(0, I64_MAX)
      end

      def boolean
        wrong_type("a boolean") unless [true, false].include?(value)
        value
      end

      # A UUID in lowercase hyphenated form.
      def uuid
        wrong_type("a string") unless value.is_a?(String)
        unless LOWERCASE_UUID_PATTERN.match?(value)
          raise DecodeError.invalid_field_value(
            path,
            "\"#{Protocol.truncate_to_bytes(value, 64)}\" is not a UUID in lowercase hyphenated form " \
            "(xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
          )
        end
        value
      end

      # A timestamp, as a UTC Time.
      def timestamp
        wrong_type("a string") unless value.is_a?(String)
        time = Timestamp.parse(value)
        return time if time

        raise DecodeError.invalid_field_value(
          path,
          "\"#{Protocol.truncate_to_bytes(value, 64)}\" is not an RFC 3339 timestamp of the form " \
          "YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)"
        )
      end

      # A value of a closed enumeration of wire strings.
      def one_of(allowed)
        wrong_type("a string") unless value.is_a?(String)
        return value if allowed.include?(value)

        raise DecodeError.invalid_field_value(
          path,
          "\"#{Protocol.truncate_to_bytes(value, 64)}\" is not one of #{allowed.map { |item| "\"#{item}\"" }.join(', ')}"
        )
      end

      # A nested protocol object, read field by field.
      def object
        wrong_type("an object") unless value.is_a?(Hash)
        FieldReader.new(value, path)
      end

      # An opaque JSON object (user payload), passed on unchanged.
      def json_object
        wrong_type("an object") unless value.is_a?(Hash)
        value
      end

      # An array of at most `max_items` entries (`limit_exceeded` beyond), non-empty if
      # `non_empty` (`invalid_field_value` otherwise); its entries as Fields, in order.
      def array(max_items, non_empty: false)
        wrong_type("an array") unless value.is_a?(Array)
        if value.length > max_items
          raise DecodeError.limit_exceeded(path, "#{value.length} entries, more than the maximum of #{max_items}")
        end
        raise DecodeError.invalid_field_value(path, "must not be empty") if non_empty && value.empty?

        value.each_with_index.map { |item, index| Field.new(item, "#{path}[#{index}]") }
      end

      # A `{batch_id, step_id}` reference.
      def step_ref
        fields = object
        StepRef.new(batch_id: fields.required("batch_id").uuid, step_id: fields.required("step_id").id)
      end

      private

      def wrong_type(expected)
        raise DecodeError.invalid_field_type(path, expected, Protocol.json_type_name(value))
      end

      def text_violation(kind)
        case kind
        when :identifier
          return "must not be empty" if value.empty?

          "may contain only the characters A-Z a-z 0-9 . _ : @ -" unless IDENTIFIER_PATTERN.match?(value)
        when :name
          "must not be empty" if value.empty?
        when :code
          "must match [a-z][a-z0-9_]*" unless CODE_PATTERN.match?(value)
        end
      end
    end

    module_function

    # Reads each of `fields` with the block, rejecting an entry equal (by `key`) to an earlier
    # one with `invalid_field_value` at the path `duplicate_path` gives for it.
    def read_distinct(fields, key:, duplicate_path: ->(field) { field.path })
      seen = {}
      fields.map do |field|
        item = yield(field)
        item_key = key.call(item)
        if seen.key?(item_key)
          raise DecodeError.invalid_field_value(duplicate_path.call(field), "duplicates entry [#{seen[item_key]}]")
        end

        seen[item_key] = seen.size
        item
      end
    end
  end
end

# frozen_string_literal: true

module TaskerWorker
  module Protocol
    # The version of the protocol this SDK speaks (spec §4).
    VERSION = "1.0"
    # Its major and minor numbers.
    MAJOR_VERSION = 1
    MINOR_VERSION = 0

    # Default largest frame, in bytes (1 MiB); a worker decodes with it until `welcome`.
    DEFAULT_MAX_FRAME_BYTES = 1024 * 1024
    # Smallest and largest `max_frame_bytes` an orchestrator may announce.
    MIN_MAX_FRAME_BYTES = 64 * 1024
    MAX_MAX_FRAME_BYTES = 64 * 1024 * 1024
    # Default and largest `max_steps_per_batch`.
    DEFAULT_MAX_STEPS_PER_BATCH = 100
    MAX_STEPS_PER_BATCH_CEILING = 1000
    # Deepest nesting of arrays and objects; the message object itself is level 1 (spec §3.8).
    MAX_NESTING_DEPTH = 64
    # Byte limits of the string kinds (spec §3.5).
    MAX_IDENTIFIER_BYTES = 128
    MAX_NAME_BYTES = 255
    MAX_TEXT_BYTES = 16 * 1024
    MAX_CODE_BYTES = 64
    MAX_BACKTRACE_ENTRIES = 100
    MAX_BACKTRACE_ENTRY_BYTES = 2048
    # Most entries in `hello.handler_classes`, and the range of `hello.capacity`.
    MAX_HANDLER_CLASSES = 1000
    MAX_CAPACITY = 10_000
    # Heartbeat interval bounds and default, in milliseconds; liveness default and maximum.
    MIN_HEARTBEAT_INTERVAL_MS = 100
    MAX_HEARTBEAT_INTERVAL_MS = 60_000
    DEFAULT_HEARTBEAT_INTERVAL_MS = 1000
    DEFAULT_LIVENESS = 5
    MAX_LIVENESS = 100

    # Integer ranges (spec §3.4).
    I64_MIN = -(2**63)
    I64_MAX = (2**63) - 1
    U64_MAX = (2**64) - 1
    U32_MAX = (2**32) - 1

    # The per-session limits a decoder enforces: the defaults before `welcome`, the announced
    # values after it.
    Limits = Struct.new(:max_frame_bytes, :max_steps_per_batch, keyword_init: true) do
      # The limits every peer uses before `welcome` (spec §12).
      def self.default
        new(max_frame_bytes: DEFAULT_MAX_FRAME_BYTES, max_steps_per_batch: DEFAULT_MAX_STEPS_PER_BATCH)
      end

      # The limits a `welcome` announces.
      def self.from_welcome(welcome)
        new(max_frame_bytes: welcome.max_frame_bytes, max_steps_per_batch: welcome.max_steps_per_batch)
      end
    end

    module_function

    # The longest prefix of `text` of at most `max_bytes` UTF-8 bytes that ends on a character
    # boundary. Senders fit free text (error messages, backtraces) into the limits with it.
    def truncate_to_bytes(text, max_bytes)
      text = text.to_s
      text = text.encode(Encoding::UTF_8, invalid: :replace, undef: :replace) unless text.encoding == Encoding::UTF_8
      text = text.scrub unless text.valid_encoding?
      return text if text.bytesize <= max_bytes

      text.byteslice(0, max_bytes).scrub("")
    end
  end
end

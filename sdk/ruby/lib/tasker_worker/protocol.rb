# frozen_string_literal: true

require_relative "version"
require_relative "errors"

module TaskerWorker
  # The Tasker worker protocol, version 1.0 (`docs/protocol/spec.md`): decoding the messages an
  # orchestrator sends (and, for tests and tools, those a worker sends) with the spec's exact
  # validation order and error codes, and building and encoding the messages a worker sends.
  #
  #   message = TaskerWorker::Protocol.decode_orchestrator_message(frame)
  #   message.message_type # => "step_batch"
  #   TaskerWorker::Protocol.encode(TaskerWorker::Protocol::Builders.goodbye(worker_id: id, reason: "deploy"))
  #
  # Files: limits (constants, Limits), decode_error (DecodeError and its codes), frame_parser
  # (steps 1–5 of the validation order), fields (typed field reads), timestamp, messages (the
  # message Structs and their canonical wire form), decoder, builders (worker messages, encode,
  # the error reply to a rejected frame).
  module Protocol
  end
end

require_relative "protocol/limits"
require_relative "protocol/decode_error"
require_relative "protocol/timestamp"
require_relative "protocol/frame_parser"
require_relative "protocol/messages"
require_relative "protocol/fields"
require_relative "protocol/decoder"
require_relative "protocol/builders"

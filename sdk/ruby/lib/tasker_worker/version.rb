# frozen_string_literal: true

module TaskerWorker
  # The SDK's own version, announced in `hello.sdk.version`.
  VERSION = "0.1.0"
  # The SDK's name, announced in `hello.sdk.name`.
  SDK_NAME = "tasker-worker-ruby"
  # The language announced in `hello.sdk.language`.
  SDK_LANGUAGE = "ruby"
end

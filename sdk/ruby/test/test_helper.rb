# frozen_string_literal: true

$stdout.sync = true
require "minitest/autorun"
require "json"
require "tasker_worker"

module TaskerWorkerTest
  # The repository root, found from this file (sdk/ruby/test → ../../..).
  REPO_ROOT = File.expand_path("../../..", __dir__)
  # The SDK root (sdk/ruby).
  SDK_ROOT = File.expand_path("..", __dir__)
  # The shared protocol test vectors.
  VECTORS_DIR = File.join(REPO_ROOT, "docs", "protocol", "vectors")
end

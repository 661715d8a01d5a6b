# frozen_string_literal: true

require_relative "lib/tasker_worker/version"

Gem::Specification.new do |spec|
  spec.name = "tasker_worker"
  spec.version = TaskerWorker::VERSION
  spec.summary = "Ruby worker SDK for the Tasker workflow orchestrator"
  spec.description = "Run Tasker step handlers in Ruby: a ZeroMQ worker speaking the Tasker worker " \
                     "protocol v1, the step handler interface, and a small HTTP client for the Tasker API."
  spec.authors = ["Tasker maintainers"]
  spec.license = "MIT"
  spec.required_ruby_version = ">= 3.1"
  spec.files = Dir["lib/**/*.rb", "bin/*", "README.md"]
  spec.bindir = "bin"
  spec.executables = ["tasker-worker"]
  spec.require_paths = ["lib"]
  spec.add_dependency "ffi-rzmq", "~> 2.0"
  spec.add_development_dependency "minitest", "~> 5.0"
  spec.metadata["rubygems_mfa_required"] = "true"
end

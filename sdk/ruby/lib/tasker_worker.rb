# frozen_string_literal: true

# The Ruby worker SDK for Tasker: write step handlers, register them by `handler_class`, and run a
# Worker that connects to the orchestrator over ZeroMQ, receives batches of ready steps, runs them
# and reports their results (protocol v1, `docs/protocol/spec.md`). Also a small HTTP Client for
# the Tasker API.
#
#   require "tasker_worker"
#
#   class ValidateOrderHandler < TaskerWorker::StepHandler
#     handles "OrderFulfillment::ValidateOrderHandler"
#
#     def process(task, sequence, step)
#       raise TaskerWorker::PermanentError, "no items" if task.context["items"].to_a.empty?
#
#       { "validated" => true }
#     end
#   end
#
#   TaskerWorker::Worker.new(endpoint: "tcp://127.0.0.1:5555").run
#
# Files: version, errors (the SDK's exceptions), protocol (codec), step_context (Task, Sequence,
# Step), step_handler (StepHandler), registry (Registry), step_execution (a step on its thread,
# FailureReport), outbox (held results), connection (the DEALER socket), worker_stats, worker
# (the session loop), client (HTTP API), cli (the tasker-worker executable).
module TaskerWorker
end

require_relative "tasker_worker/version"
require_relative "tasker_worker/errors"
require_relative "tasker_worker/protocol"
require_relative "tasker_worker/step_context"
require_relative "tasker_worker/step_handler"
require_relative "tasker_worker/registry"
require_relative "tasker_worker/step_execution"
require_relative "tasker_worker/outbox"
require_relative "tasker_worker/worker_stats"
require_relative "tasker_worker/connection"
require_relative "tasker_worker/worker"
require_relative "tasker_worker/client"

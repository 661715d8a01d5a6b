# frozen_string_literal: true

$stdout.sync = true
require "minitest/autorun"
require "json"
require "logger"
require "stringio"
require "tasker_worker"

module TaskerWorkerTest
  # The repository root, found from this file (sdk/ruby/test → ../../..).
  REPO_ROOT = File.expand_path("../../..", __dir__)
  # The SDK root (sdk/ruby).
  SDK_ROOT = File.expand_path("..", __dir__)
  # The shared protocol test vectors.
  VECTORS_DIR = File.join(REPO_ROOT, "docs", "protocol", "vectors")
end

require_relative "support/mailbox"
require_relative "support/scripted_orchestrator"
require_relative "support/tasker_test_handler"

module TaskerWorkerTest
  # Runs a Worker against a ScriptedOrchestrator on a background thread, and cleans both up.
  module WorkerHarness
    def setup
      super
      @orchestrator = ScriptedOrchestrator.new
      @workers = []
      @log = StringIO.new
    end

    def teardown
      @workers.each do |worker, thread|
        next unless thread.alive?

        # Twice: no grace period for steps still running.
        worker.stop("test teardown")
        worker.stop("test teardown")
        thread.kill unless thread.join(5)
      end
      @orchestrator.close
      super
    end

    # A worker with `handlers` (default: tasker.test) connected to the scripted orchestrator.
    # Returns [worker, thread]; the thread's value is run's return value, or the exception.
    def start_worker(handlers: nil, **options)
      handlers ||= TaskerWorker::Registry.new.register(TaskerTestHandler::HANDLER_CLASS, TaskerTestHandler)
      worker = TaskerWorker::Worker.new(endpoint: @orchestrator.endpoint, handlers: handlers,
                                        logger: Logger.new(@log), shutdown_grace: 2, shutdown_ack_timeout: 0.5,
                                        **options)
      thread = Thread.new do
        worker.run(install_signal_handlers: false)
      rescue Exception => e # rubocop:disable Lint/RescueException
        e
      end
      thread.report_on_exception = false
      @workers << [worker, thread]
      [worker, thread]
    end

    # Starts a worker and completes its handshake; returns [worker, thread, identity].
    def start_registered_worker(welcome: {}, **options)
      worker, thread = start_worker(**options)
      hello = @orchestrator.handshake(**welcome)
      [worker, thread, hello.identity]
    end

    def step(step_id, **fields)
      ScriptedOrchestrator.step(step_id, **fields)
    end

    # The thread's result, waiting at most `timeout` seconds.
    def result_of(thread, timeout: 10)
      assert thread.join(timeout), "the worker did not stop within #{timeout} s"
      thread.value
    end
  end
end

# frozen_string_literal: true

# `tasker.test` in Ruby: the configurable handler of tests, examples and benchmarks, with the
# same behaviour keys and outputs as the Rust built-in (crates/tasker-worker/src/builtin/
# test_handler.rs), so end-to-end tests can run a Rust or a Ruby worker interchangeably:
#
#   ruby -Isdk/ruby/lib sdk/ruby/bin/tasker-worker --connect tcp://127.0.0.1:5555 \
#     --require sdk/ruby/test/support/tasker_test_handler.rb
#
# Behaviour comes from the step's handler_config, overridden key by key for one task by
# task_context.test_behaviour.<step_name> (an object with the same keys). Keys (all optional;
# unknown keys are ignored; a known key with the wrong type fails the step permanently with
# error_class InvalidTestBehaviour):
#
#   sleep_ms                 integer >= 0  sleep this long first (stops when the step is interrupted)
#   panic                    boolean       fail permanently with error_class "panic" (the Rust panic)
#   fail_permanently         boolean       fail permanently
#   fail_retryable_attempts  integer K>=0  fail retryably while attempt <= K (attempts count from 1)
#   retry_after_ms           integer >= 0  with fail_retryable_attempts: the retry delay asked for
#   error_class              string        the error_class of the failures above
#                                          (default TestPermanentFailure / TestRetryableFailure)
#   output                   any JSON      the step's output, returned as is (also null)
#
# They apply in this order: sleep, panic, permanent failure, retryable failure, output. Without
# `output` the step returns {"step", "attempt", "previous_results" (sorted parent names), "worker"}.
#
# Every execution first appends "<task_id> <step_name> <step_id> <attempt> <worker_id>\n" to the
# file named by TASKER_TEST_EXECUTION_LOG, if set (append mode, one write per line, so several
# worker processes can share it).

require "json"
require "tasker_worker"

module TaskerWorkerTest
  class TaskerTestHandler < TaskerWorker::StepHandler
    HANDLER_CLASS = "tasker.test"
    EXECUTION_LOG_ENV = "TASKER_TEST_EXECUTION_LOG"
    INVALID_BEHAVIOUR_ERROR_CLASS = "InvalidTestBehaviour"
    U64_MAX = (2**64) - 1

    handles HANDLER_CLASS

    class << self
      # The execution log file; defaults to $TASKER_TEST_EXECUTION_LOG (nil or empty: none).
      attr_writer :execution_log

      def execution_log
        return @execution_log if defined?(@execution_log)

        path = ENV.fetch(EXECUTION_LOG_ENV, "")
        path.empty? ? nil : path
      end
    end

    def process(task, sequence, step)
      record_execution(task, step)
      behaviour = behaviour_for(task, step)
      sleep(behaviour[:sleep_ms] / 1000.0) if behaviour[:sleep_ms]
      if behaviour[:panic]
        raise TaskerWorker::PermanentError.new(
          "tasker.test: step #{step.name} asked to panic (attempt #{step.attempt})", error_class: "panic"
        )
      end
      if behaviour[:fail_permanently]
        raise TaskerWorker::PermanentError.new("tasker.test: step #{step.name} is configured to fail permanently",
                                               error_class: behaviour[:error_class] || "TestPermanentFailure")
      end
      if step.attempt <= behaviour[:fail_retryable_attempts]
        raise TaskerWorker::RetryableError.new(
          "tasker.test: step #{step.name} fails attempt #{step.attempt} of the first " \
          "#{behaviour[:fail_retryable_attempts]} (retryable)",
          retry_after: behaviour[:retry_after_ms] && Rational(behaviour[:retry_after_ms], 1000),
          error_class: behaviour[:error_class] || "TestRetryableFailure"
        )
      end
      return behaviour[:output] if behaviour.key?(:output)

      { "step" => step.name, "attempt" => step.attempt, "previous_results" => sequence.dependencies,
        "worker" => step.worker_id }
    end

    private

    def record_execution(task, step)
      path = self.class.execution_log or return
      File.write(path, "#{task.id} #{step.name} #{step.id} #{step.attempt} #{step.worker_id}\n", mode: "a")
    rescue SystemCallError, IOError => e
      raise TaskerWorker::PermanentError.new("tasker.test cannot append to the execution log #{path}: #{e.message}",
                                             error_class: "TestExecutionLogError")
    end

    def behaviour_for(task, step)
      keys = step.handler_config.dup
      all = task.context["test_behaviour"]
      if all.is_a?(Hash) && all.key?(step.name)
        overrides = all[step.name]
        invalid("task_context.test_behaviour.#{step.name} must be an object, not #{show(overrides)}") unless overrides.is_a?(Hash)
        keys.merge!(overrides)
      end
      behaviour = {
        sleep_ms: unsigned(keys, "sleep_ms"),
        panic: boolean(keys, "panic") || false,
        fail_permanently: boolean(keys, "fail_permanently") || false,
        fail_retryable_attempts: unsigned(keys, "fail_retryable_attempts") || 0,
        retry_after_ms: unsigned(keys, "retry_after_ms"),
        error_class: error_class(keys)
      }
      behaviour[:output] = keys["output"] if keys.key?("output")
      behaviour
    end

    def unsigned(keys, key)
      value = keys[key]
      return nil if value.nil?
      return value if value.is_a?(Integer) && value.between?(0, U64_MAX)

      invalid("#{key} must be an integer >= 0, not #{show(value)}")
    end

    def boolean(keys, key)
      value = keys[key]
      return value if value.nil? || value == true || value == false

      invalid("#{key} must be true or false, not #{show(value)}")
    end

    def error_class(keys)
      value = keys["error_class"]
      return nil if value.nil?
      return value if value.is_a?(String) && !value.empty?

      invalid("error_class must be a non-empty string, not #{show(value)}")
    end

    def show(value)
      JSON.generate(value)
    end

    def invalid(message)
      raise TaskerWorker::PermanentError.new("tasker.test: #{message}", error_class: INVALID_BEHAVIOUR_ERROR_CLASS)
    end
  end
end

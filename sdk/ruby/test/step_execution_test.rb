# frozen_string_literal: true

require "test_helper"

# A step on its own thread: results always come back through the queue, even when the
# interruption races the start or the end of the handler.
class StepExecutionTest < Minitest::Test
  Protocol = TaskerWorker::Protocol

  def start(handler, timeout_ms: nil)
    request = Protocol::StepRequest.new(
      step_id: 1, task_id: 1, step_name: "s", handler_class: "h", handler_config: {}, task_context: {},
      previous_results: {}, metadata: Protocol::StepMetadata.new(attempt: 1, retry_limit: 0, timeout_ms: timeout_ms,
                                                                 idempotency_key: "1:1")
    )
    cancellation = TaskerWorker::Cancellation.new
    step = TaskerWorker::Step.new(request: request, batch_id: "b", worker_id: "w", cancellation: cancellation)
    finished = TaskerWorkerTest::Mailbox.new
    execution = TaskerWorker::StepExecution.start(
      key: ["b", 1], task: TaskerWorker::Task.new(id: 1, context: {}), sequence: TaskerWorker::Sequence.new({}),
      step: step, cancellation: cancellation, handler_factory: -> { handler }, finished: finished, wake: -> {}
    )
    [execution, finished]
  end

  def test_an_interruption_right_after_the_start_is_never_lost
    sleeper = ->(_task, _sequence, _step) { sleep 10 }
    200.times do
      execution, finished = start(sleeper)
      execution.interrupt(:cancelled, "step_cancelled")
      result = finished.pop(timeout: 5)
      assert_kind_of TaskerWorker::StepInterrupted, result.exception
      assert_equal [:cancelled, "step_cancelled"], [execution.interruption, execution.interruption_detail]
    end
  end

  def test_an_interruption_after_the_handler_returned_changes_nothing
    quick = ->(_task, _sequence, step) { step.id * 2 }
    50.times do
      execution, finished = start(quick)
      result = finished.pop(timeout: 5)
      execution.interrupt(:timeout)
      assert_equal [2, nil], [result.value, result.exception]
    end
  end

  def test_a_handler_that_defers_the_interruption_finishes_its_section_first
    sections = TaskerWorkerTest::Mailbox.new
    careful = lambda do |_task, _sequence, step|
      Thread.handle_interrupt(TaskerWorker::StepInterrupted => :never) do
        sections << :entered
        sleep 0.01 until step.cancelled?
        sections << :critical_section_done
      end
      :not_reached
    end
    execution, finished = start(careful)
    assert_equal :entered, sections.pop(timeout: 5)
    execution.interrupt(:shutdown)
    result = finished.pop(timeout: 5)
    assert_equal :critical_section_done, sections.pop(timeout: 1)
    assert_kind_of TaskerWorker::StepInterrupted, result.exception, "delivered when the section ends"
  end

  def test_the_deadline_follows_the_timeout
    execution, finished = start(->(*) { :ok }, timeout_ms: 50)
    finished.pop(timeout: 5)
    refute execution.overdue?(execution.deadline - 0.001)
    assert execution.overdue?(execution.deadline)
    execution.interrupt(:timeout)
    refute execution.overdue?(execution.deadline + 1), "an interrupted step is not overdue again"
  end
end

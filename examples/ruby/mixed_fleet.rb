# frozen_string_literal: true

# The Ruby half of the mixed-fleet workflow (examples/mixed_fleet/template.yaml): steps that only
# Ruby workers register, between steps run by Rust and Python workers.
#
# Run a worker with them (from the repository root):
#
#   ruby -Isdk/ruby/lib sdk/ruby/bin/tasker-worker --connect tcp://127.0.0.1:5555 --require examples/ruby/mixed_fleet.rb
#
# Each output names the language and the worker that produced it and carries values computed from
# the outputs of the step's parents, whichever language produced those.

require "tasker_worker"

module MixedFleet
  # A parent's output or the context lacks what the step needs; a retry will not add it.
  class MissingInput < TaskerWorker::PermanentError; end

  # Reading checked values out of the context and the parents' outputs.
  module Inputs
    module_function

    def integer(source, key, where)
      value = source.is_a?(Hash) ? source[key] : nil
      raise MissingInput, "#{where}.#{key} must be an integer, not #{value.inspect}" unless value.is_a?(Integer)

      value
    end

    def text(source, key, where)
      value = source.is_a?(Hash) ? source[key] : nil
      raise MissingInput, "#{where}.#{key} must be a string, not #{value.inspect}" unless value.is_a?(String)

      value
    end
  end

  # The discount: handler_config.percent_per_item (default 2) per item, at most max_percent
  # (default 20), after the Rust rust_start step (whose worker it records).
  class RubyDiscount < TaskerWorker::StepHandler
    include Inputs
    handles "MixedFleet::RubyDiscount"

    def process(task, sequence, step)
      per_item = step.handler_config.fetch("percent_per_item", 2)
      max_percent = step.handler_config.fetch("max_percent", 20)
      { "language" => "ruby", "worker" => step.worker_id,
        "discount_percent" => [integer(task.context, "quantity", "context") * per_item, max_percent].min,
        "started_by" => text(sequence["rust_start"], "worker", "rust_start") }
    end
  end

  # The total: the Python subtotal less the Ruby discount (rounded down to a cent).
  class RubyTotal < TaskerWorker::StepHandler
    include Inputs
    handles "MixedFleet::RubyTotal"

    def process(_task, sequence, step)
      price = sequence["python_price"]
      discount = sequence["ruby_discount"]
      subtotal = integer(price, "subtotal_cents", "python_price")
      percent = integer(discount, "discount_percent", "ruby_discount")
      { "language" => "ruby", "worker" => step.worker_id,
        "total_cents" => subtotal * (100 - percent) / 100,
        "priced_by" => text(price, "worker", "python_price") }
    end
  end
end

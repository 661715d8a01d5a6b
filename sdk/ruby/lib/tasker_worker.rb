# frozen_string_literal: true

require_relative "tasker_worker/version"
require_relative "tasker_worker/errors"
require_relative "tasker_worker/protocol"

# frozen_string_literal: true

require "logger"
require "securerandom"
require "socket"

module TaskerWorker
  # A worker process's session with the orchestrator: connects one DEALER to the orchestrator's
  # ROUTER endpoint, registers its handler classes, runs the steps it is sent (at most
  # `capacity` at once, each on its own thread) and reports their results, until it is told to
  # stop.
  #
  #   worker = TaskerWorker::Worker.new(endpoint: "tcp://127.0.0.1:5555", capacity: 8)
  #   worker.run # until SIGTERM or SIGINT; returns true after a graceful shutdown
  #
  # == One loop
  #
  # The thread that calls #run owns the socket and does everything else: it polls the socket (and
  # a wake-up pipe) with a timeout of at most one heartbeat interval, decodes inbound frames,
  # sends heartbeats, collects finished steps from a queue, sends their results, enforces step
  # timeouts and starts queued steps. Handlers run on their own threads and never touch the
  # socket. So heartbeats keep flowing while handlers run, and a loop that is stuck looks dead to
  # the orchestrator, as it should.
  #
  # == Session (spec §7)
  #
  # 1. Connect and send `hello`; wait for `welcome` (re-sending `hello` on a fresh connection
  #    after the hello timeout, doubling up to `retry_backoff_max`). `hello_rejected` with
  #    `not_accepting_workers` is retried the same way; any other code raises HelloRejected.
  # 2. Registered: heartbeat every negotiated interval; run or queue each `step_batch`; send a
  #    `partial_result` as each step ends and a `batch_completion` when its batch is done; hold
  #    each result until a `result_ack` names it, re-sending it if it waits longer than
  #    `liveness` intervals. `cancel_steps` and each step's `timeout_ms` stop running handlers
  #    (see StepInterrupted). `health_request` is answered at once.
  # 3. No valid message from the orchestrator for `liveness` intervals: a fresh connection and a
  #    new `hello` listing every step still accounted for (`in_flight`); after `welcome`, every
  #    held result is sent again in its original order. `error` `not_registered` (the
  #    orchestrator restarted): `hello` again on the same connection.
  # 4. Stop (SIGTERM/SIGINT or #stop): `goodbye` handing back the steps not started; running
  #    steps may finish within `shutdown_grace` (then they are stopped and reported as retryable
  #    `tasker.worker_shutdown` failures); heartbeats go on until every result is acknowledged
  #    or `shutdown_ack_timeout` passes; close. A second signal ends the grace period at once.
  #
  # Bad inbound frames are logged, counted by error code (#stats) and answered with `error`
  # (never an `error` with an `error`); they never stop the worker.
  class Worker
    DEFAULT_CAPACITY = 10
    # Seconds to wait for `welcome` before saying `hello` again (the spec's hello timeout).
    DEFAULT_HELLO_TIMEOUT = 5.0
    DEFAULT_SHUTDOWN_GRACE = 30.0
    DEFAULT_SHUTDOWN_ACK_TIMEOUT = 5.0
    DEFAULT_RETRY_BACKOFF_MAX = 30.0
    # The `error_class` of a step still running when a shutdown's grace period ended: retryable
    # (the attempt counts, but another worker may well finish it).
    WORKER_SHUTDOWN_ERROR_CLASS = "tasker.worker_shutdown"
    # The `error_class` of a step whose output JSON cannot carry (NaN, Infinity, invalid UTF-8,
    # nesting deeper than the protocol allows): not retryable, it is the handler's bug.
    INVALID_OUTPUT_ERROR_CLASS = "TaskerWorker::InvalidOutput"
    # Longest wait in one poll, in seconds, whatever the deadlines.
    MAX_POLL_WAIT = 1.0
    # Most inbound frames handled in one turn of the loop before timers get a look.
    MAX_FRAMES_PER_TURN = 1000

    # A step this worker accounts for without a final result: :queued or :running.
    Slot = Struct.new(:key, :request, :state, :execution, keyword_init: true)
    # A batch whose steps are not all reported: step ids in batch order, statuses so far, steps
    # neither reported nor handed back, and whether any was handed back (no completion then).
    BatchProgress = Struct.new(:order, :statuses, :remaining, :handed_back, keyword_init: true)
    # The graceful shutdown in progress.
    Drain = Struct.new(:reason, :grace_deadline, :grace_expired_at, :ack_deadline, keyword_init: true)

    attr_reader :worker_id, :name, :capacity, :endpoint, :registry, :logger

    # - endpoint: the orchestrator's ROUTER endpoint (`tcp://host:port`, `ipc:///path`); the only
    #   setting a worker needs.
    # - handlers: a Registry (default: the global TaskerWorker.registry that `handles` fills), a
    #   Hash of handler_class => handler, or an Array of StepHandler classes.
    # - capacity: most steps run at once (1–10000), announced as this worker's credit. Too low
    #   leaves steps waiting; too high lets one process hit a slow dependency that many times.
    # - name: display name for dashboards and logs (default "tasker-worker-ruby (pid N)").
    # - heartbeat_interval: seconds between heartbeats this worker asks for (0.1–60), or nil to
    #   accept the orchestrator's; `welcome` decides.
    # - worker_id: unique per process (default `<hostname>-<pid>-<8 hex>`, spec §5.2).
    # - hello_timeout, retry_backoff_max: seconds to wait for `welcome` before trying again,
    #   doubling up to the maximum; also the least time between two re-registrations
    #   prompted by `not_registered` (the first one is immediate).
    # - shutdown_grace: seconds running steps may take to finish after a stop request.
    # - shutdown_ack_timeout: seconds to wait for the last acknowledgements after that.
    # - interrupt_handlers: stop a timed-out, cancelled or shut-down step by raising
    #   StepInterrupted in its thread (default). With false, stopping is cooperative: the worker
    #   only sets `step.cancelled?`, and the step keeps its slot until its handler returns or
    #   raises (then reported as stopped) — for code that Thread#raise must never cut short.
    # - logger: a Logger (default: INFO to $stderr).
    def initialize(endpoint:, handlers: TaskerWorker.registry, capacity: DEFAULT_CAPACITY, name: nil,
                   heartbeat_interval: nil, worker_id: nil, hello_timeout: DEFAULT_HELLO_TIMEOUT,
                   shutdown_grace: DEFAULT_SHUTDOWN_GRACE, shutdown_ack_timeout: DEFAULT_SHUTDOWN_ACK_TIMEOUT,
                   retry_backoff_max: DEFAULT_RETRY_BACKOFF_MAX, interrupt_handlers: true, logger: nil)
      @endpoint = endpoint
      @registry = self.class.registry_from(handlers)
      @capacity = capacity
      @name = name || "#{SDK_NAME} (pid #{Process.pid})"
      @worker_id = worker_id || self.class.default_worker_id
      @requested_heartbeat_ms = heartbeat_interval && (heartbeat_interval * 1000).round
      @hello_timeout = hello_timeout
      @shutdown_grace = shutdown_grace
      @shutdown_ack_timeout = shutdown_ack_timeout
      @retry_backoff_max = retry_backoff_max
      @cooperative = !interrupt_handlers
      @logger = logger || Logger.new($stderr, progname: "tasker-worker", level: Logger::INFO)
      validate_options
      @stats = WorkerStats.new
      @started_at = Clock.now
      @wake_reader, @wake_writer = IO.pipe
      @finished = Thread::Queue.new
      @state = :new
    end

    # A snapshot of the worker's counters (see WorkerStats).
    def stats
      @stats.to_h
    end

    # Whether the worker currently has a session (`welcome` received and not lost since).
    def registered?
      @link == :registered
    end

    # Whether #run is in progress.
    def running?
      @state == :running
    end

    # Asks a running worker to shut down gracefully (thread-safe; what SIGTERM does). A second
    # call ends the grace period at once.
    def stop(reason = "shutdown")
      if @stop_request
        @force_stop = true
      else
        @stop_request = reason
      end
      wake
    end

    # Connects, registers and runs steps until stopped; then shuts down gracefully and returns
    # true. With `install_signal_handlers`, SIGTERM and SIGINT call #stop (the previous handlers
    # are restored on return). Raises HelloRejected if the orchestrator refuses this worker for
    # good, ConfigurationError for an empty registry or an endpoint ZeroMQ cannot connect to.
    def run(install_signal_handlers: true)
      raise Error, "a Worker runs once; make a new one" unless @state == :new

      @state = :running
      begin
        check_registry
        previous_traps = install_traps if install_signal_handlers
        start_session
        turn until drain_finished?
        @logger.info("worker #{@worker_id} stopped")
        true
      ensure
        finish_session
        restore_traps(previous_traps) if previous_traps
      end
    end

    class << self
      # `<hostname>-<pid>-<8 random hex digits>`, with characters the protocol does not allow
      # in an identifier replaced by `-`.
      def default_worker_id
        host = Socket.gethostname.gsub(/[^A-Za-z0-9._:@-]/, "-")[0, 100]
        host = "worker" if host.empty?
        "#{host}-#{Process.pid}-#{SecureRandom.hex(4)}"
      end

      # A Registry from what Worker.new accepts as `handlers`.
      def registry_from(handlers)
        case handlers
        when Registry then handlers
        when Hash then handlers.each_with_object(Registry.new) { |(name, handler), registry| registry.register(name, handler) }
        when Array then handlers.each_with_object(Registry.new) { |handler, registry| registry.register(handler) }
        else raise ConfigurationError, "handlers must be a TaskerWorker::Registry, a Hash or an Array of handler classes"
        end
      end
    end

    private

    # ----- set-up -----

    def validate_options
      unless @endpoint.is_a?(String) && !@endpoint.empty?
        raise ConfigurationError, "endpoint must be a ZeroMQ endpoint such as tcp://127.0.0.1:5555"
      end
      unless @capacity.is_a?(Integer) && @capacity.between?(1, Protocol::MAX_CAPACITY)
        raise ConfigurationError, "capacity must be an integer from 1 to #{Protocol::MAX_CAPACITY}, not #{@capacity.inspect}"
      end
      unless @worker_id.is_a?(String) && @worker_id.bytesize <= Protocol::MAX_IDENTIFIER_BYTES &&
             Protocol::IDENTIFIER_PATTERN.match?(@worker_id)
        raise ConfigurationError, "worker_id must be 1 to 128 characters of A-Z a-z 0-9 . _ : @ -, not #{@worker_id.inspect}"
      end
      unless @name.is_a?(String) && !@name.empty? && @name.bytesize <= Protocol::MAX_NAME_BYTES
        raise ConfigurationError, "name must be 1 to #{Protocol::MAX_NAME_BYTES} bytes"
      end
      if @requested_heartbeat_ms &&
         !@requested_heartbeat_ms.between?(Protocol::MIN_HEARTBEAT_INTERVAL_MS, Protocol::MAX_HEARTBEAT_INTERVAL_MS)
        raise ConfigurationError, "heartbeat_interval must be between 0.1 and 60 seconds"
      end
      { hello_timeout: @hello_timeout, retry_backoff_max: @retry_backoff_max,
        shutdown_grace: @shutdown_grace, shutdown_ack_timeout: @shutdown_ack_timeout }.each do |option, value|
        raise ConfigurationError, "#{option} must be a number of seconds >= 0" unless value.is_a?(Numeric) && value >= 0
      end
    end

    def check_registry
      raise ConfigurationError, "no handlers are registered; register at least one handler class" if @registry.empty?
      return if @registry.size <= Protocol::MAX_HANDLER_CLASSES

      raise ConfigurationError, "#{@registry.size} handler classes; the protocol allows #{Protocol::MAX_HANDLER_CLASSES}"
    end

    def start_session
      @limits = Protocol::Limits.default
      @heartbeat_interval = (@requested_heartbeat_ms || Protocol::DEFAULT_HEARTBEAT_INTERVAL_MS) / 1000.0
      @liveness = Protocol::DEFAULT_LIVENESS
      @registration_attempts = 0
      @last_rehello_at = nil # when not_registered last made us say hello
      @steps = {}
      @queue = []
      @running = {}
      @batches = {}
      @outbox = Outbox.new
      @next_sequence = 1
      @drain = nil
      @pending_hand_backs = []
      @last_contact = Clock.now
      @context = ZMQ::Context.new
      open_connection
      @logger.info("worker #{@worker_id} connecting to #{@endpoint} with handlers #{@registry.handler_classes.join(', ')} " \
                   "(capacity #{@capacity})")
      send_hello
    end

    def open_connection
      @connection = Connection.new(@context, @endpoint)
      @poller = ZMQ::Poller.new
      @poller.register_readable(@connection.socket)
      @poller.register_readable(@wake_reader)
    end

    def install_traps
      %w[TERM INT].to_h do |signal|
        [signal, Signal.trap(signal) { stop("SIG#{signal}") }]
      end
    end

    def restore_traps(previous)
      previous.each { |signal, handler| Signal.trap(signal, handler.nil? ? "DEFAULT" : handler) }
    end

    def finish_session
      @state = :stopped
      @running&.each_value { |execution| execution.interrupt(:shutdown, cooperative: @cooperative) }
      @connection&.close
      @context&.terminate
      @wake_writer.close
      @wake_reader.close
      @stats.set(:registered, false)
      @link = nil
    end

    # ----- the loop -----

    # One turn: wait for a frame, a finished step, a stop request or the next deadline, then
    # handle whatever is due.
    def turn
      wait_for_events
      handle_stop_request
      receive_frames
      collect_finished_steps
      on_timers
      start_queued_steps
    end

    def wake
      @wake_writer.write_nonblock("!", exception: false)
    rescue IOError
      nil
    end

    def wait_for_events
      @poller.poll(poll_timeout_ms)
      loop do
        break unless @wake_reader.read_nonblock(4096, exception: false).is_a?(String)
      end
    end

    def poll_timeout_ms
      return 0 unless @finished.empty?
      return 0 if (@stop_request && @drain.nil?) || (@force_stop && @drain && @drain.grace_expired_at.nil?)

      now = Clock.now
      deadlines = [now + [MAX_POLL_WAIT, @heartbeat_interval].min]
      if registered?
        deadlines << @next_heartbeat_at << (@last_contact + liveness_window)
      elsif @link_deadline
        deadlines << @link_deadline
      end
      @running.each_value { |execution| deadlines << execution.deadline if execution.deadline && !execution.interrupted? }
      deadlines.concat(drain_deadlines) if @drain
      [((deadlines.min - now) * 1000).ceil, 0].max
    end

    def drain_deadlines
      deadlines = [@drain.ack_deadline]
      deadlines << @drain.grace_deadline if @drain.grace_expired_at.nil? && !@running.empty?
      deadlines << (@drain.grace_expired_at + @shutdown_ack_timeout) if @drain.grace_expired_at
      deadlines.compact
    end

    def liveness_window
      @liveness * @heartbeat_interval
    end

    def handle_stop_request
      begin_drain(@stop_request) if @stop_request && @drain.nil?
      @drain.grace_deadline = Clock.now if @force_stop && @drain && @drain.grace_expired_at.nil?
    end

    def receive_frames
      MAX_FRAMES_PER_TURN.times do
        parts = @connection.receive or break
        if parts.length == 1
          on_frame(parts.first)
        else
          reject(Protocol::DecodeError.multipart(parts.length), nil)
        end
      end
    end

    def collect_finished_steps
      on_step_finished(@finished.pop) until @finished.empty?
    end

    def on_timers
      now = Clock.now
      @running.each_value do |execution|
        next unless execution.overdue?(now)

        @logger.warn("step #{execution.step.id} ran past its timeout of #{execution.step.timeout_ms} ms; stopping it")
        execution.interrupt(:timeout, cooperative: @cooperative)
      end
      expire_grace(now) if @drain
      case @link
      when :registered then on_registered_timers(now)
      when :awaiting_welcome
        if now >= @link_deadline
          @logger.warn("no welcome from the orchestrator at #{@endpoint} in time; saying hello on a fresh connection")
          reconnect
        end
      when :retry then reconnect if now >= @link_deadline
      end
    end

    def on_registered_timers(now)
      if now - @last_contact > liveness_window
        @logger.warn("nothing from the orchestrator for #{liveness_window.round(3)} s; reconnecting")
        reconnect
        return
      end
      return if now < @next_heartbeat_at

      in_flight = @steps.size
      @stats.bump(:heartbeats_sent)
      send_message(Protocol::Builders.heartbeat(worker_id: @worker_id, in_flight: in_flight,
                                                free_capacity: [@capacity - in_flight, 0].max))
      @next_heartbeat_at = now + @heartbeat_interval
      flush_outbox(stale_before: now - liveness_window)
    end

    # ----- the link to the orchestrator -----

    def send_message(message)
      @connection.send_frame(Protocol.encode(message))
    end

    # While awaiting `welcome` a worker sends nothing but `hello` (spec §7.1).
    def send_if_registered(message)
      send_message(message) if registered?
    end

    def in_flight_refs
      (@steps.keys + @outbox.held_steps).uniq.sort.map do |batch_id, step_id|
        Protocol::StepRef.new(batch_id: batch_id, step_id: step_id)
      end
    end

    def send_hello
      hello = Protocol::Builders.hello(worker_id: @worker_id, name: @name, handler_classes: @registry.handler_classes,
                                       capacity: @capacity, heartbeat_interval_ms: @requested_heartbeat_ms,
                                       in_flight: in_flight_refs)
      send_message(hello)
      @stats.bump(:hellos_sent)
      @last_hello_at = Clock.now
      set_unregistered(:awaiting_welcome, @last_hello_at + backoff(@hello_timeout, [@retry_backoff_max, @hello_timeout].max))
    end

    # `base` doubled for every failed registration attempt, at most `max`.
    def backoff(base, max)
      [base * (2**[@registration_attempts, 16].min), max].min
    end

    def set_unregistered(link, deadline)
      @outbox.mark_all_unsent if registered?
      @link = link
      @link_deadline = deadline
      @stats.set(:registered, false)
    end

    # A fresh socket (linger 0, so a new routing identity) and a new `hello` (spec §7.4).
    def reconnect
      @registration_attempts += 1
      @stats.bump(:reconnects)
      @connection.close
      open_connection
      send_hello
    end

    def on_frame(frame)
      message = begin
        Protocol.decode_orchestrator_message(frame, @limits)
      rescue Protocol::DecodeError => e
        reject(e, frame)
        return
      end
      @last_contact = Clock.now
      case message
      when Protocol::Welcome then on_welcome(message)
      when Protocol::HelloRejected then on_hello_rejected(message)
      when Protocol::OrchestratorHeartbeat then nil
      when Protocol::StepBatch then on_step_batch(message)
      when Protocol::ResultAck then on_result_ack(message)
      when Protocol::CancelSteps then on_cancel_steps(message)
      when Protocol::HealthRequest then on_health_request(message)
      when Protocol::ErrorReport then on_error_report(message)
      end
    end

    # Counts and logs a rejected frame and answers it with `error` (spec §11).
    def reject(error, frame)
      @stats.reject(error.code)
      @logger.warn("rejected a frame from the orchestrator (#{error.code}): #{error.message}")
      report = if frame
                 Protocol::Builders.rejection_report(frame, error)
               else
                 Protocol::Builders.error_report(code: error.code, message: error.message)
               end
      send_if_registered(report) if report
    end

    def on_welcome(welcome)
      unless welcome.worker_id == @worker_id
        @logger.warn("ignoring a welcome for another worker id (#{welcome.worker_id})")
        return
      end
      @limits = Protocol::Limits.from_welcome(welcome)
      @liveness = welcome.liveness
      @heartbeat_interval = welcome.heartbeat_interval_ms / 1000.0
      return if registered?

      @logger.info("registered with orchestrator #{welcome.orchestrator_id} (heartbeat #{welcome.heartbeat_interval_ms} ms, " \
                   "liveness #{welcome.liveness}, #{@outbox.size} held results)")
      @link = :registered
      @link_deadline = nil
      @registration_attempts = 0
      @next_heartbeat_at = Clock.now
      @stats.set(:registered, true)
      # A new session does not know this worker is leaving: say it (again).
      send_goodbye(@pending_hand_backs.slice!(0..)) if @drain
      flush_outbox
    end

    def on_hello_rejected(rejection)
      raise HelloRejected.new(code: rejection.code, message: rejection.message) unless
        rejection.code == Protocol::HelloRejectionCode::NOT_ACCEPTING_WORKERS

      wait = backoff(@hello_timeout, @retry_backoff_max)
      @logger.warn("the orchestrator is not accepting workers (#{rejection.message}); trying again in #{wait} s")
      set_unregistered(:retry, Clock.now + wait)
    end

    def on_error_report(report)
      @stats.bump(:errors_received)
      if report.code == "not_registered"
        # Say hello at once: a restarted orchestrator waits only a few liveness windows for
        # workers to claim the steps they run before it re-dispatches them. While awaiting
        # welcome, the replies to what was sent before the hello are ignored; re-registrations
        # prompted by not_registered are at most one per hello timeout (spec §7.5), counted from
        # the last such one, not from the hello that opened the session (which may be moments old).
        now = Clock.now
        if registered? && (@last_rehello_at.nil? || now - @last_rehello_at >= @hello_timeout)
          @logger.warn("the orchestrator does not know this worker (#{report.message}); saying hello again")
          @last_rehello_at = now
          send_hello
        end
        return
      end
      key = rejected_result_key(report)
      if key && @outbox.release(key)
        @stats.bump(:results_dropped)
        @stats.set(:results_unacknowledged, @outbox.size)
        @logger.error("the orchestrator rejected the #{key.kind} of step #{key.step_id.inspect} in batch #{key.batch_id} " \
                      "(#{report.code}: #{report.message}); dropping it, the step will time out and be retried")
      else
        @logger.warn("the orchestrator rejected a message from this worker (#{report.code}): #{report.message}")
      end
    end

    # The held result an orchestrator `error` names, if it names one (spec §9.3).
    def rejected_result_key(report)
      return nil unless report.batch_id

      type = report.offending_message_type
      if type == "batch_completion" || (type.nil? && report.step_id.nil?)
        Protocol::ResultKey.batch_completion(report.batch_id)
      elsif (type == "partial_result" || type.nil?) && report.step_id
        Protocol::ResultKey.partial_result(report.batch_id, report.step_id)
      end
    end

    def on_health_request(request)
      in_flight = @steps.size
      details = {
        "running" => @running.size, "queued" => @queue.size, "unacknowledged_results" => @outbox.size,
        "rejected_frames" => @stats[:rejected_frames], "ruby_version" => RUBY_VERSION
      }
      send_if_registered(Protocol::Builders.health_reply(
                           request_id: request.request_id, worker_id: @worker_id,
                           status: @drain ? "draining" : "healthy", in_flight: in_flight,
                           free_capacity: [@capacity - in_flight, 0].max,
                           uptime_ms: ((Clock.now - @started_at) * 1000).round, details: details
                         ))
    end

    # ----- results -----

    def hold_and_send(key, frame)
      @outbox.hold(key, frame)
      @stats.set(:results_unacknowledged, @outbox.size)
      transmit(@outbox[key]) if registered?
    end

    def transmit(held)
      @stats.bump(:results_resent) if held.ever_sent
      held.ever_sent = true
      held.last_sent = @connection.send_frame(held.frame) ? Clock.now : nil
    end

    # Sends, oldest first, every held result not sent on this session and, with `stale_before`,
    # every one last sent before it (spec §9.3).
    def flush_outbox(stale_before: nil)
      @outbox.each do |held|
        transmit(held) if held.last_sent.nil? || (stale_before && held.last_sent < stale_before)
      end
    end

    def on_result_ack(ack)
      ack.acks.each { |entry| @stats.bump(:results_acknowledged) if @outbox.release(entry.key) }
      @stats.set(:results_unacknowledged, @outbox.size)
    end

    # ----- steps -----

    def on_step_batch(batch)
      batch_id = batch.batch_id
      if @batches.key?(batch_id) || @outbox.holds_batch?(batch_id)
        @logger.warn("batch #{batch_id} received twice; ignoring the copy")
        return
      end
      return hand_back_batch(batch) if @drain

      before = @steps.size
      @batches[batch_id] = BatchProgress.new(order: batch.steps.map(&:step_id), statuses: {},
                                             remaining: batch.steps.length, handed_back: false)
      batch.steps.each do |request|
        key = [batch_id, request.step_id]
        if @registry.key?(request.handler_class)
          @steps[key] = Slot.new(key: key, request: request, state: :queued)
          @queue << key
        else
          @logger.warn("no handler registered for #{request.handler_class} (step #{request.step_id})")
          report(key, request.metadata.attempt, elapsed_ms: 0, error: Protocol::Builders.step_error(
            message: "worker #{@worker_id} has no handler registered for handler_class #{request.handler_class.inspect}",
            error_class: Protocol::ReservedErrorClass::UNKNOWN_HANDLER_CLASS, retryable: true
          ))
        end
      end
      return unless @steps.size > @capacity && @steps.size > before

      # An orchestrator bug (its credit should prevent it): say so, and still run the steps (§8.4).
      @logger.warn("batch #{batch_id} brings this worker to #{@steps.size} steps, above its capacity of #{@capacity}")
      send_if_registered(Protocol::Builders.error_report(
                           code: "capacity_exceeded", offending_message_type: "step_batch", batch_id: batch_id,
                           message: "step_batch #{batch_id} brings worker #{@worker_id} to #{@steps.size} steps without " \
                                    "a result, above its capacity of #{@capacity}; the excess is queued"
                         ))
    end

    def hand_back_batch(batch)
      refs = batch.steps.map { |step| Protocol::StepRef.new(batch_id: batch.batch_id, step_id: step.step_id) }
      @logger.info("shutting down: handing back batch #{batch.batch_id} (#{refs.size} steps)")
      @stats.bump(:steps_handed_back, refs.size)
      send_goodbye(refs)
    end

    def start_queued_steps
      return if @drain

      while @running.size < @capacity && (key = @queue.shift)
        slot = @steps[key]
        start_step(slot) if slot&.state == :queued
      end
    end

    def start_step(slot)
      request = slot.request
      cancellation = Cancellation.new
      registry = @registry
      execution = StepExecution.start(
        key: slot.key, cancellation: cancellation,
        task: Task.new(id: request.task_id, context: request.task_context),
        sequence: Sequence.new(request.previous_results),
        step: Step.new(request: request, batch_id: slot.key.first, worker_id: @worker_id, cancellation: cancellation),
        handler_factory: -> { registry.handler_for(request.handler_class) },
        finished: @finished, wake: -> { wake }
      )
      slot.state = :running
      slot.execution = execution
      @running[slot.key] = execution
      @stats.bump(:steps_started)
    end

    def on_step_finished(finished)
      execution = @running.delete(finished.key)
      slot = @steps[finished.key] or return
      attempt = slot.request.metadata.attempt
      if finished.exception.nil?
        report(finished.key, attempt, output: finished.value, elapsed_ms: finished.elapsed_ms)
      elsif execution&.interrupted?
        report(finished.key, attempt, error: interruption_error(execution), elapsed_ms: finished.elapsed_ms)
      else
        error = FailureReport.from_exception(finished.exception, finished.handler)
        @logger.info("step #{finished.key.last} failed (#{error.error_class}, retryable: #{error.retryable}): #{error.message}")
        report(finished.key, attempt, error: error, elapsed_ms: finished.elapsed_ms)
      end
    end

    def interruption_error(execution)
      case execution.interruption
      when :timeout
        Protocol::Builders.step_error(
          message: "the step ran past its timeout of #{execution.step.timeout_ms} ms and was stopped by the worker",
          error_class: Protocol::ReservedErrorClass::TIMEOUT, retryable: true
        )
      when :cancelled then cancelled_error(execution.interruption_detail)
      else
        Protocol::Builders.step_error(
          message: "the worker shut down and its grace period of #{(@shutdown_grace * 1000).round} ms ended " \
                   "before the step finished",
          error_class: WORKER_SHUTDOWN_ERROR_CLASS, retryable: true
        )
      end
    end

    def cancelled_error(reason)
      Protocol::Builders.step_error(message: "the orchestrator cancelled the step (#{reason})",
                                    error_class: Protocol::ReservedErrorClass::CANCELLED, retryable: false)
    end

    def on_cancel_steps(cancel)
      cancel.step_ids.each do |step_id|
        key = [cancel.batch_id, step_id]
        slot = @steps[key]
        unless slot
          @logger.debug("cancel for step #{step_id} of batch #{cancel.batch_id}, which has no pending result")
          next
        end
        @logger.info("cancelling step #{step_id} of batch #{cancel.batch_id} (#{cancel.reason})")
        if slot.state == :running
          slot.execution.interrupt(:cancelled, cancel.reason, cooperative: @cooperative)
        else
          @queue.delete(key)
          report(key, slot.request.metadata.attempt, error: cancelled_error(cancel.reason), elapsed_ms: 0)
        end
      end
    end

    # Sends the final result of the step `key` (and its batch's completion when it is the last),
    # holding both until acknowledged.
    def report(key, attempt, elapsed_ms:, output: nil, error: nil)
      @steps.delete(key)
      batch_id, step_id = key
      message = Protocol::Builders.partial_result(batch_id: batch_id, step_id: step_id, attempt: attempt,
                                                  worker_id: @worker_id, sequence: @next_sequence,
                                                  execution_time_ms: elapsed_ms, output: output, error: error)
      @next_sequence += 1
      frame = encode_result(message)
      @stats.bump(message.status == "completed" ? :steps_completed : :steps_failed)
      hold_and_send(Protocol::ResultKey.partial_result(batch_id, step_id), frame)
      progress_batch(batch_id, step_id, message.status)
    end

    # The frame of a partial result; a `completed` result JSON cannot carry, or too large for
    # the session's `max_frame_bytes`, becomes a `failed` one (spec §9.1).
    def encode_result(message)
      frame = begin
        Protocol.encode(message)
      rescue JSON::GeneratorError, JSON::NestingError, EncodingError => e
        return fail_result(message, INVALID_OUTPUT_ERROR_CLASS, "the step's output cannot be encoded as JSON: #{e.message}")
      end
      if Protocol::FrameParser.scan(frame).first
        return fail_result(message, INVALID_OUTPUT_ERROR_CLASS,
                           "the step's output nests deeper than the protocol's #{Protocol::MAX_NESTING_DEPTH} levels")
      end
      return frame if frame.bytesize <= @limits.max_frame_bytes

      fail_result(message, Protocol::ReservedErrorClass::OUTPUT_TOO_LARGE,
                  "the step's result encodes to #{frame.bytesize} bytes, more than the session's max_frame_bytes of " \
                  "#{@limits.max_frame_bytes}")
    end

    def fail_result(message, error_class, text)
      @logger.warn("step #{message.step_id}: #{text}")
      message.status = "failed"
      message.output = nil
      message.error = Protocol::Builders.step_error(message: text, error_class: error_class, retryable: false)
      Protocol.encode(message)
    end

    def progress_batch(batch_id, step_id, status)
      progress = @batches[batch_id] or return
      progress.statuses[step_id] = status
      progress.remaining -= 1
      return if progress.remaining.positive?

      @batches.delete(batch_id)
      return if progress.handed_back

      summaries = progress.order.map do |id|
        Protocol::StepSummary.new(step_id: id, status: progress.statuses.fetch(id, "failed"))
      end
      completion = Protocol::Builders.batch_completion(batch_id: batch_id, step_summaries: summaries, worker_id: @worker_id)
      @stats.bump(:batches_completed)
      hold_and_send(Protocol::ResultKey.batch_completion(batch_id), Protocol.encode(completion))
    end

    # ----- shutdown -----

    def begin_drain(reason)
      handed_back = @queue.map do |key|
        @steps.delete(key)
        progress = @batches[key.first]
        if progress
          progress.handed_back = true
          progress.remaining -= 1
          @batches.delete(key.first) if progress.remaining.zero?
        end
        Protocol::StepRef.new(batch_id: key.first, step_id: key.last)
      end
      @queue.clear
      @stats.bump(:steps_handed_back, handed_back.size)
      @drain = Drain.new(reason: reason.to_s, grace_deadline: Clock.now + @shutdown_grace)
      @logger.info("shutting down (#{reason}): #{@running.size} steps running, #{handed_back.size} handed back, " \
                   "grace #{@shutdown_grace} s")
      send_goodbye(handed_back)
    end

    # Says `goodbye` with `handed_back` now, or after the next `welcome` when unregistered.
    def send_goodbye(handed_back)
      if registered?
        send_message(Protocol::Builders.goodbye(worker_id: @worker_id, reason: @drain.reason, handed_back: handed_back))
      else
        @pending_hand_backs.concat(handed_back)
      end
    end

    def expire_grace(now)
      return unless @drain.grace_expired_at.nil? && now >= @drain.grace_deadline && !@running.empty?

      @logger.warn("shutdown grace period over; stopping the #{@running.size} steps still running")
      @drain.grace_expired_at = now
      @running.each_value { |execution| execution.interrupt(:shutdown, cooperative: @cooperative) }
    end

    # Whether the shutdown is complete: nothing running, and every result acknowledged or the
    # acknowledgement wait over. Handlers that ignore their interruption are abandoned
    # `shutdown_ack_timeout` after the grace period.
    def drain_finished?
      return false unless @drain

      now = Clock.now
      unless @steps.empty?
        return false unless @drain.grace_expired_at && now - @drain.grace_expired_at >= @shutdown_ack_timeout

        @logger.error("abandoning #{@steps.size} steps whose handlers did not stop")
        return true
      end
      return true if @outbox.empty?

      @drain.ack_deadline ||= now + @shutdown_ack_timeout
      return false if now < @drain.ack_deadline

      @logger.warn("shutting down with #{@outbox.size} results the orchestrator has not acknowledged")
      true
    end
  end
end

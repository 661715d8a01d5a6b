# frozen_string_literal: true

require "date"

module TaskerWorker
  module Protocol
    # Timestamps (spec §3.7): `YYYY-MM-DDTHH:MM:SS[.F](Z|+HH:MM|-HH:MM)` with uppercase `T` and
    # `Z`, 1–9 fractional digits, no leap seconds, year >= 0001, a real calendar date. Read into
    # UTC `Time`s; written in the canonical form (UTC, `Z`, 0/3/6/9 fractional digits).
    module Timestamp
      PATTERN = /\A(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:(Z)|([+-])(\d{2}):(\d{2}))\z/.freeze

      module_function

      # The UTC Time `text` denotes, or nil if it is not a protocol timestamp.
      def parse(text)
        match = PATTERN.match(text)
        return nil unless match

        year, month, day, hour, minute, second = match.captures.first(6).map { |part| Integer(part, 10) }
        return nil unless year >= 1 && Date.valid_civil?(year, month, day)
        return nil unless hour <= 23 && minute <= 59 && second <= 59

        fraction = match[7] ? Rational(Integer(match[7], 10), 10**match[7].length) : 0
        offset = 0
        unless match[8]
          offset_hours = Integer(match[10], 10)
          offset_minutes = Integer(match[11], 10)
          return nil unless offset_hours <= 23 && offset_minutes <= 59

          offset = ((offset_hours * 60) + offset_minutes) * 60
          offset = -offset if match[9] == "-"
        end
        Time.utc(year, month, day, hour, minute, second + fraction) - offset
      end

      # The canonical wire text of `time`: UTC, `Z`, and the fewest of 0, 3, 6 or 9 fractional
      # digits that represent it exactly (to the nanosecond).
      def format(time)
        time = time.getutc
        nanos = time.nsec
        fraction =
          if nanos.zero? then ""
          elsif (nanos % 1_000_000).zero? then Kernel.format(".%03d", nanos / 1_000_000)
          elsif (nanos % 1000).zero? then Kernel.format(".%06d", nanos / 1000)
          else Kernel.format(".%09d", nanos)
          end
        "#{time.strftime('%Y-%m-%dT%H:%M:%S')}#{fraction}Z"
      end

      # Now, truncated to the millisecond (senders SHOULD send millisecond precision).
      def now
        Time.at(Rational(Process.clock_gettime(Process::CLOCK_REALTIME, :millisecond), 1000)).utc
      end
    end
  end
end

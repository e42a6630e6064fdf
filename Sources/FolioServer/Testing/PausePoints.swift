import Foundation
import Logging
import NIOConcurrencyHelpers

/// Named points in the order flow where a crash test can stop the process
/// (`FOLIO_TEST_PAUSE_AT`, accepted only with `TESTING`): on reaching the
/// point the process writes `paused at <point>` to standard output and waits
/// forever, so a SIGKILL lands exactly there. Without the setting, reaching
/// a point costs one comparison.
public final class PausePoints: Sendable {
    public enum Point: String, Sendable, CaseIterable {
        /// A worker claimed submit jobs and has not yet asked the broker.
        case afterClaim = "after_claim"
        /// The broker answered a submission; its answer is not yet applied.
        case afterBrokerSubmit = "after_broker_submit"
        /// A broker's answer was applied and committed; the job is not yet done.
        case afterApply = "after_apply"
        /// A keyed request claimed its idempotency key and has not yet run.
        case afterIdempotencyClaim = "after_idempotency_claim"
        /// The broker reported on a resting order during a recheck; not yet applied.
        case afterRecheck = "after_recheck"
        /// A rebalance run's sells have all ended; its buys are not yet placed.
        case rebalanceBeforeBuys = "rebalance_before_buys"
        /// An event of a broker's trade stream arrived and was understood; not yet applied.
        case afterStreamEvent = "after_stream_event"
        /// A page of a Plaid transaction sync was saved with its cursor; the next page is not yet asked for.
        case afterPlaidPage = "after_plaid_page"
    }

    public struct Setting: Sendable, Equatable {
        var point: Point
        /// Passes through the point to let go by before pausing.
        var skip: Int
    }

    private let setting: Setting?
    private let passes = NIOLockedValueBox(0)

    init(_ setting: Setting?) {
        self.setting = setting
    }

    static let none = PausePoints(nil)

    func reach(_ point: Point) async {
        guard let setting, setting.point == point else { return }
        let pass = passes.withLockedValue { count -> Int in
            count += 1
            return count
        }
        guard pass > setting.skip else { return }
        StandardOutput.writeLine("paused at \(point.rawValue)")
        while true {
            try? await Task.sleep(for: .seconds(3600))
        }
    }
}

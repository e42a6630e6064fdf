import FolioDomain
import Foundation
import NIOConcurrencyHelpers
import SQLKit

/// Placements on one account that arrive while another of its placements is
/// being written wait, and then go together in one transaction: the account
/// is locked once and one commit is flushed for all of them.
///
/// Why: PostgreSQL holds an account's row lock until the commit is on disk,
/// so with one transaction per order an account could take only as many
/// orders a second as the disk flushes, whatever the hardware. This is group
/// commit for one account, in the process. Each placement still gets its own
/// answer: one the rules refuse (too little cash, a client order id taken)
/// fails alone, checked against the books as the placements before it left
/// them. When the shared transaction fails through one placement, each is
/// tried again in a transaction of its own, so only that one fails (see `write`).
///
/// Nothing waits on a timer: the first placement on an idle account is
/// written at once; only those that arrive meanwhile wait for the next turn.
/// Other processes' placements meet at the database's lock, as before.
final class PlacementQueue: Sendable {
    let orders: OrderService
    /// Placements written in one transaction, at most.
    let batchLimit: Int

    init(orders: OrderService, batchLimit: Int = 64) {
        self.orders = orders
        self.batchLimit = batchLimit
    }

    /// One request's placement, with the idempotency claim its commit holds and completes.
    struct Member: Sendable {
        var placing: OrderService.Placing
        var claim: IdempotencyClaim?
        /// The response the request answers (and its record stores) for the order.
        var respond: @Sendable (OrderState) throws -> StoredResponse
    }

    private struct Line: Hashable {
        var account: AccountID
        var owner: UserID
    }

    private typealias Answer = Result<StoredResponse, any Error>

    private enum Turn: Sendable {
        case answered(Answer)
        /// This placement writes the batch (its own first) and then hands the line on.
        case write([Waiter])
    }

    private struct Waiter: Sendable {
        var member: Member
        var turn: CheckedContinuation<Turn, Never>
    }

    /// Per account and owner: present while a batch is being written, with the placements waiting for the next.
    private let lines = NIOLockedValueBox<[Line: [Waiter]]>([:])

    /// Places the order and returns its response, once its transaction has committed.
    func place(_ member: Member, account: AccountID, owner: UserID) async throws -> StoredResponse {
        let line = Line(account: account, owner: owner)
        let turn: Turn = await withCheckedContinuation { continuation in
            let waiter = Waiter(member: member, turn: continuation)
            let writesNow = lines.withLockedValue { lines in
                guard lines[line] != nil else {
                    lines[line] = []
                    return true
                }
                lines[line]!.append(waiter)
                return false
            }
            if writesNow { continuation.resume(returning: .write([waiter])) }
        }
        switch turn {
        case .answered(let answer):
            return try answer.get()
        case .write(let batch):
            // In a task of its own: the others' orders must not fail because this request was canceled.
            let answers = await Task { await self.write(batch.map(\.member), line: line) }.value
            // The next batch starts before this one's answers go out.
            let next = lines.withLockedValue { lines -> [Waiter] in
                let waiting = lines[line] ?? []
                guard !waiting.isEmpty else {
                    lines[line] = nil
                    return []
                }
                lines[line] = Array(waiting.dropFirst(batchLimit))
                return Array(waiting.prefix(batchLimit))
            }
            if let first = next.first { first.turn.resume(returning: .write(next)) }
            for (waiter, answer) in zip(batch, answers).dropFirst() { waiter.turn.resume(returning: .answered(answer)) }
            return try answers[0].get()
        }
    }

    /// How long the account's line is: the placements waiting, plus one
    /// while a batch is being written; 0 when it is idle.
    func lineLength(account: AccountID, owner: UserID) -> Int {
        lines.withLockedValue { $0[Line(account: account, owner: owner)].map { $0.count + 1 } ?? 0 }
    }

    /// Writes the batch together. When that fails through one placement's
    /// fault (its response could not be made; its client order id was taken
    /// meanwhile by a placement on another account), before the commit,
    /// nothing was written: each placement is then written alone, so only
    /// that one fails. Any other failure (the database unreachable) is every
    /// placement's answer, as it would be one's alone; and a failure at the
    /// commit itself (a connection lost as it went out) leaves unknown
    /// whether it committed, so trying again could place the orders twice.
    private func write(_ members: [Member], line: Line) async -> [Answer] {
        let committing = NIOLockedValueBox(false)
        do {
            return try await writeTogether(members, line: line, committing: committing)
        } catch where members.count > 1 && !committing.withLockedValue({ $0 }) && Self.isOneMembersFault(error) {
            var answers: [Answer] = []
            for member in members {
                do {
                    answers.append(try await writeTogether([member], line: line, committing: NIOLockedValueBox(false))[0])
                } catch {
                    answers.append(.failure(MemberFailure.unwrapped(error)))
                }
            }
            return answers
        } catch {
            return members.map { _ in .failure(MemberFailure.unwrapped(error)) }
        }
    }

    static func isOneMembersFault(_ error: any Error) -> Bool {
        error is MemberFailure || DatabaseConstraint(error) != nil
    }

    /// An error of one placement's own response.
    private struct MemberFailure: Error {
        let error: any Error

        static func unwrapped(_ error: any Error) -> any Error {
            (error as? MemberFailure)?.error ?? error
        }
    }

    /// Rolls back a transaction in which every placement was refused: it has nothing to commit.
    private struct NothingPlaced: Error {
        let answers: [Answer]
    }

    /// `committing` turns true once every statement has run and only the commit is left.
    private func writeTogether(_ members: [Member], line: Line, committing: NIOLockedValueBox<Bool>) async throws -> [Answer] {
        let orders = self.orders
        do {
            return try await orders.database.transaction { db in
                committing.withLockedValue { $0 = false }  // SQLite retries a busy transaction from the start
                let held = try await IdempotencyClaim.hold(members.compactMap(\.claim), on: db)
                // Each response is made inside its commit: what the record stores is what the client gets.
                let responses = NIOLockedValueBox<[Int: StoredResponse]>([:])
                var placings: [(member: Int, placing: OrderService.Placing)] = []
                for (index, member) in members.enumerated() {
                    // A claim taken over meanwhile belongs to another request now: 409, nothing written.
                    if let claim = member.claim, !held.contains(claim.id) { continue }
                    var placing = member.placing
                    placing.alsoWrite = { order, writes in
                        let stored: StoredResponse
                        do { stored = try member.respond(order) } catch { throw MemberFailure(error: error) }
                        responses.withLockedValue { $0[index] = stored }
                        if let claim = member.claim { writes.add(claim.completion(stored)) }
                    }
                    placings.append((index, placing))
                }
                var answers = members.map { _ in Answer.failure(Idempotency.inProgress) }
                let placed = placings.isEmpty ? [] : try await orders.place(placings.map(\.placing), account: line.account, userID: line.owner, on: db)
                let made = responses.withLockedValue { $0 }
                for (placing, result) in zip(placings, placed) {
                    answers[placing.member] = result.map { _ in made[placing.member]! }
                }
                guard placed.contains(where: { (try? $0.get()) != nil }) else { throw NothingPlaced(answers: answers) }
                committing.withLockedValue { $0 = true }
                return answers
            }
        } catch let nothing as NothingPlaced {
            return nothing.answers
        }
    }
}

#pragma once
// Every typed actor interface of the agent, in one place.

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/replies_to.hpp>
#include <caf/settings.hpp>
#include <caf/typed_actor.hpp>

#include <string>
#include <type_traits>
#include <vector>

#include "actors/control.hpp"
#include "actors/messages.hpp"
#include "actors/pending_budget.hpp"

// Local only, like the payloads in messages.hpp.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(outpost::PendingBudgetPtr)

namespace outpost {

using append_atom = caf::atom_constant<caf::atom("append")>;
using read_atom = caf::atom_constant<caf::atom("read")>;
using ack_atom = caf::atom_constant<caf::atom("ack")>;
using status_atom = caf::atom_constant<caf::atom("status")>;
using committed_atom = caf::atom_constant<caf::atom("committed")>;
using subscribe_atom = caf::atom_constant<caf::atom("subscribe")>;
using set_link_atom = caf::atom_constant<caf::atom("setlink")>;
using set_supervisor_atom = caf::atom_constant<caf::atom("setsup")>;
using online_atom = caf::atom_constant<caf::atom("online")>;
using pull_atom = caf::atom_constant<caf::atom("pull")>;
using commit_atom = caf::atom_constant<caf::atom("commit")>;
using batch_due_atom = caf::atom_constant<caf::atom("batchdue")>;
using shutdown_atom = caf::atom_constant<caf::atom("shutdown")>;
using hand_over_atom = caf::atom_constant<caf::atom("handover")>;
using close_atom = caf::atom_constant<caf::atom("close")>;
using restart_atom = caf::atom_constant<caf::atom("restart")>;
using settle_atom = caf::atom_constant<caf::atom("settle")>;
using connected_atom = caf::atom_constant<caf::atom("connected")>;
using disconnected_atom = caf::atom_constant<caf::atom("disconnect")>;
using stored_atom = caf::atom_constant<caf::atom("stored")>;
using sleep_atom = caf::atom_constant<caf::atom("sleep")>;
using wake_atom = caf::atom_constant<caf::atom("wake")>;
using control_atom = caf::atom_constant<caf::atom("control")>;
using purge_atom = caf::atom_constant<caf::atom("purge")>;
using quarantine_atom = caf::atom_constant<caf::atom("quarantine")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;
using retry_atom = caf::atom_constant<caf::atom("retry")>;
using fatal_atom = caf::atom_constant<caf::atom("fatal")>;
using budget_atom = caf::atom_constant<caf::atom("budget")>;
using suspend_atom = caf::atom_constant<caf::atom("suspend")>;
using resume_atom = caf::atom_constant<caf::atom("resume")>;
using cancel_atom = caf::atom_constant<caf::atom("cancel")>;
using reconnect_atom = caf::atom_constant<caf::atom("reconnect")>;
using compact_atom = caf::atom_constant<caf::atom("compact")>;

// Marks a message an actor sends only to itself (a timer, the next slice of
// its work). The interfaces others hold leave these out; each such actor's
// own type (`*_self_actor`, used by its implementation and its spawn) adds
// them, so that another actor sending one does not compile.
using internal_atom = caf::atom_constant<caf::atom("internal")>;

// What every actor answers: its counters and state, as settings (the
// collector's `status` command gathers them through the supervisor; tests
// and benchmarks read them too).
using status_interface = caf::typed_actor<caf::replies_to<status_atom>::with<caf::settings>>;

// Ships buffered records somewhere and acks them once they are stored there.
using link_actor = caf::typed_actor<
    // The buffer committed records of a lane up to a seq: come and read them. When the
    // commit held few of that lane, they come along (else null): a link that has sent
    // everything before them sends them without reading them back.
    caf::reacts_to<committed_atom, Lane, uint64_t, BufferedRecords>,
    // Start (true) or stop (false) delivering.
    caf::reacts_to<online_atom, bool>,
    // The operator: end the connection and connect again at once; answers what it did (an
    // error from a link that has no connection).
    caf::replies_to<reconnect_atom>::with<std::string>>::extend_with<status_interface>;

// Owns the LMDB store; producers wait here for space (and on its pending budget).
using buffer_actor = caf::typed_actor<
    // Stores one record; answers its seq once committed, later if the buffer is full.
    caf::replies_to<append_atom, Lane, RecordRef>::with<uint64_t>,
    // The budget for waiting appends (actors/pending_budget.hpp), which every query shares.
    caf::replies_to<budget_atom>::with<PendingBudgetPtr>,
    // Records of a lane after a seq, for the link: at most max_records, and no more bytes than
    // max_bytes unless the first record alone is bigger.
    caf::replies_to<read_atom, Lane, uint64_t, uint64_t, uint64_t>::with<BufferedRecords>,
    // Deletes a lane's records through a seq, which may let waiting appends in.
    caf::replies_to<ack_atom, Lane, uint64_t>::with<uint64_t>,
    // Moves records a reader found corrupt out of the lane.
    caf::reacts_to<quarantine_atom, Lane, std::vector<uint64_t>>,
    // Deletes a query's records and refuses its waiting appends; answers how many.
    caf::replies_to<purge_atom, uint64_t>::with<uint64_t>,
    // Tells the buffer which link to notify after each commit.
    caf::reacts_to<set_link_atom, link_actor>,
    // Commit the waiting appends (those the mailbox held when this arrived) now: from a query
    // that waits for its appends' answers, and from the buffer itself when their time came.
    caf::reacts_to<commit_atom>,
    // Shutdown: commits the waiting appends that fit, the shutdown reserve included, refuses the
    // others; answers how many it refused.
    caf::replies_to<settle_atom>::with<uint64_t>,
    // Settles, then quits.
    caf::reacts_to<close_atom>,
    // The operator: rewrite the store's file without its free pages; answers its bytes before
    // and after (an error when there was no room for the copy).
    caf::replies_to<compact_atom>::with<uint64_t, uint64_t>>::extend_with<status_interface>;

using buffer_self_actor = buffer_actor::extend<
    // Apply the acks gathered since the first one came.
    caf::reacts_to<internal_atom, ack_atom>,
    // Purge the next slice of the oldest purge under way.
    caf::reacts_to<internal_atom, purge_atom>>;

// Reads the buffer's store on its own thread, for the network link.
using buffer_reader_actor = caf::typed_actor<
    // As the buffer's read.
    caf::replies_to<read_atom, Lane, uint64_t, uint64_t, uint64_t>::with<BufferedRecords>>::extend_with<status_interface>;

// Runs one query: pulls rows from its source, batches them, appends them.
using query_actor = caf::typed_actor<
    // Pull more rows from the source: from the query itself, the waker, or its source (events
    // wait), the last two through an untyped handle.
    caf::reacts_to<pull_atom>,
    // The pending budget has room for what the query waits to send (from the thread that freed
    // it, through an untyped handle).
    caf::reacts_to<budget_atom>,
    // Hands the partial batch to the buffer and answers how many rows await commit; quits once none do.
    caf::replies_to<hand_over_atom>::with<uint64_t>,
    // The operator: stop pulling (the partial batch goes to the buffer) until resumed. Each
    // answers whether it changed anything.
    caf::replies_to<suspend_atom>::with<bool>,
    caf::replies_to<resume_atom>::with<bool>>::extend_with<status_interface>;

using query_self_actor = query_actor::extend<
    // The batch with this generation has waited long enough.
    caf::reacts_to<internal_atom, batch_due_atom, uint64_t>>;

// Wakes sleeping queries with one timer for all of them.
using waker_actor = caf::typed_actor<
    // Sends the sender `pull` once the delay has passed.
    caf::reacts_to<sleep_atom, caf::timespan>>::extend_with<status_interface>;

using waker_self_actor = waker_actor::extend<
    // The timer armed for this time (since the clock's epoch) fired.
    caf::reacts_to<internal_atom, wake_atom, caf::timespan>>;

// One event source (a /proc scan, a log file, a directory) shared by every
// query that subscribes to it with the same parameters (queries/sensors.hpp).
using sensor_actor = caf::typed_actor<
    // Subscribers arrived (SensorHub::subscribe put them in its Arrivals):
    // take them now rather than after the next scan; the sensor fills their
    // queues for as long as it lives.
    caf::reacts_to<subscribe_atom>>::extend_with<status_interface>;

using sensor_self_actor = sensor_actor::extend<
    // Look again.
    caf::reacts_to<internal_atom, tick_atom>>;

// Starts the queries, restarts failed ones, and shuts the agent down in order.
using supervisor_actor = caf::typed_actor<
    // Ordered shutdown: queries hand over, then the buffer commits, then the link stops.
    caf::reacts_to<shutdown_atom>,
    // The collector's request (collect, cancel, event table, status), answered through the call.
    caf::reacts_to<control_atom, ControlCall>,
    // The operator (outpostctl, through the inspector): suspend, resume, or restart now (hand
    // over, then start again) the query with this name or id; answers what it did.
    caf::replies_to<suspend_atom, std::string>::with<std::string>,
    caf::replies_to<resume_atom, std::string>::with<std::string>,
    caf::replies_to<restart_atom, std::string>::with<std::string>,
    // The operator: stop the query and delete its rows from the buffer (restart starts it
    // again); answers what it did.
    caf::replies_to<cancel_atom, std::string>::with<std::string>,
    // The operator: the link's reconnect and the buffer's compact, passed on; answer what they did.
    caf::replies_to<reconnect_atom>::with<std::string>,
    caf::replies_to<compact_atom>::with<std::string>>::extend_with<status_interface>;

using supervisor_self_actor = supervisor_actor::extend<
    // Start the query with this id again after its backoff.
    caf::reacts_to<internal_atom, restart_atom, uint64_t>>;

// The host's sink as the link (api/host_link.hpp): the program embedding
// Outpost acknowledges the batches it was handed, from any of its threads.
using host_link_actor = link_actor::extend<
    // Any thread (a SinkAck): the host stored the batch with this id of a lane.
    caf::reacts_to<ack_atom, Lane, uint64_t>>;

using host_link_self_actor = host_link_actor::extend<
    // A lane's failed hand-over, read or buffer ack may be tried again.
    caf::reacts_to<internal_atom, retry_atom, Lane>>;

// The network link: a link whose network thread (net/net_client.hpp) reports
// sessions and stored uploads back to it.
using net_link_actor = link_actor::extend<
    // Network thread: session s is up; the collector has stored marks[lane] of each lane.
    caf::reacts_to<connected_atom, uint64_t, std::vector<uint64_t>>,
    // Network thread: session s ended (why, milliseconds until the next attempt).
    caf::reacts_to<disconnected_atom, uint64_t, std::string, int64_t>,
    // Network thread: the collector durably stored a lane of session s through a seq.
    caf::reacts_to<stored_atom, uint64_t, Lane, uint64_t>,
    // Network thread: the collector asks something of this agent.
    caf::reacts_to<control_atom, ControlCall>,
    // Network thread: it ended for good (why); the link fails.
    caf::reacts_to<fatal_atom, std::string>,
    // Tells the link which supervisor carries out the collector's requests.
    caf::reacts_to<set_supervisor_atom, supervisor_actor>>;

using net_link_self_actor = net_link_actor::extend<
    // A lane's failed buffer read, or failed ack, may be tried again.
    caf::reacts_to<internal_atom, retry_atom, read_atom, Lane>,
    caf::reacts_to<internal_atom, retry_atom, ack_atom, Lane>,
    // The records a lane held back (link.max_delay_ms) are due.
    caf::reacts_to<internal_atom, batch_due_atom, Lane>>;

// Whether a handle type takes an internal message: none of the interfaces
// others hold may.
template <class Sig>
struct is_internal : std::false_type {};
template <class... Ins, class Out>
struct is_internal<caf::typed_mpi<caf::detail::type_list<internal_atom, Ins...>, Out>> : std::true_type {};
template <class Handle>
struct takes_internal;
template <class... Sigs>
struct takes_internal<caf::typed_actor<Sigs...>> : std::disjunction<is_internal<Sigs>...> {};

static_assert(!takes_internal<buffer_actor>::value && !takes_internal<query_actor>::value &&
                  !takes_internal<waker_actor>::value && !takes_internal<sensor_actor>::value &&
                  !takes_internal<supervisor_actor>::value && !takes_internal<link_actor>::value &&
                  !takes_internal<host_link_actor>::value && !takes_internal<net_link_actor>::value &&
                  !takes_internal<buffer_reader_actor>::value,
              "the interfaces others hold take no internal message");

}  // namespace outpost

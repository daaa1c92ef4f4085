//! The local half of every layer: this process's channels and group memberships, and fan-out
//! to them. Sharded, so that no lock is global and none is held longer than one group's send.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use crate::channel::{ChannelOwner, ChannelShared, Push};
use crate::{ChannelName, ChannelReceiver, GroupName, LayerConfig, LayerError, Message};

const CHANNEL_SHARDS: usize = 64;
const GROUP_SHARDS: usize = 16;

fn shard_of<K: Hash>(key: &K, shards: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() as usize) % shards
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Clone)]
struct Member {
    channel: Arc<ChannelShared>,
    renewed: Instant,
}

impl Member {
    /// Whether the membership had expired at `now`.
    fn expired(&self, now: Instant, expiry: Duration) -> bool {
        now.saturating_duration_since(self.renewed) > expiry
    }

    /// Whether the member still counts at `now`: its channel is open and its membership has
    /// not expired.
    fn is_live(&self, now: Instant, expiry: Duration) -> bool {
        self.channel.is_open() && !self.expired(now, expiry)
    }
}

/// A group's members. A fan-out takes the list and lets go of the lock before it pushes, so a
/// stream that joins or leaves meanwhile never waits for thousands of pushes (its whole worker
/// thread would); the list is changed in place when no fan-out holds it, and copied when one does.
#[derive(Default)]
struct Members {
    /// Where each member is in `list`.
    index: HashMap<ChannelName, usize>,
    list: Arc<Vec<Member>>,
}

impl Members {
    /// Adds a member or renews it; says whether it is new.
    fn insert(&mut self, channel: Arc<ChannelShared>, renewed: Instant) -> bool {
        let list = Arc::make_mut(&mut self.list);
        if let Some(&at) = self.index.get(&channel.name) {
            list[at].renewed = renewed;
            return false;
        }
        self.index.insert(channel.name.clone(), list.len());
        list.push(Member { channel, renewed });
        true
    }

    /// Removes a member unless `keep` says otherwise (it may have been renewed since a fan-out
    /// found it expired).
    fn remove_unless(&mut self, name: &ChannelName, keep: impl Fn(&Member) -> bool) {
        let Some(&at) = self.index.get(name) else { return };
        if keep(&self.list[at]) {
            return;
        }
        self.index.remove(name);
        let list = Arc::make_mut(&mut self.list);
        list.swap_remove(at);
        if let Some(slot) = list.get(at).and_then(|moved| self.index.get_mut(&moved.channel.name)) {
            *slot = at;
        }
    }

    fn len(&self) -> usize {
        self.list.len()
    }
}

#[derive(Default)]
struct Group {
    members: Mutex<Members>,
    /// No member was renewed before this ([`Hub::clock`]): until that is longer ago than the
    /// expiry no membership can have expired, and the group's size is its number of members,
    /// without a walk over them all (which, for every stream that joins, made joining
    /// quadratic in the group's size).
    renewed_since: AtomicU64,
}

impl Group {
    /// Records that every member left in the group was renewed at `oldest` or later.
    fn renewed_since(&self, oldest: u64) {
        self.renewed_since.store(oldest, Ordering::Release);
    }
}

/// A change in which groups have local members, for layers that mirror membership upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MembershipChange {
    /// The group got its first local member.
    Joined(GroupName),
    /// The group lost its last local member.
    Left(GroupName),
}

/// What one fan-out did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FanOut {
    pub(crate) delivered: usize,
    pub(crate) lagged: usize,
}

pub(crate) struct Hub {
    config: LayerConfig,
    /// The origin of [`Hub::clock`].
    started: Instant,
    prefix: String,
    next_id: AtomicU64,
    channels: Vec<Mutex<HashMap<ChannelName, Arc<ChannelShared>>>>,
    groups: Vec<Mutex<HashMap<GroupName, Arc<Group>>>>,
    watcher: Option<tokio::sync::mpsc::UnboundedSender<MembershipChange>>,
}

impl Hub {
    pub(crate) fn new(
        config: LayerConfig,
        prefix: String,
        watcher: Option<tokio::sync::mpsc::UnboundedSender<MembershipChange>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            started: Instant::now(),
            prefix,
            next_id: AtomicU64::new(1),
            channels: (0..CHANNEL_SHARDS).map(|_| Mutex::default()).collect(),
            groups: (0..GROUP_SHARDS).map(|_| Mutex::default()).collect(),
            watcher,
        })
    }

    pub(crate) fn config(&self) -> &LayerConfig {
        &self.config
    }

    /// Nanoseconds since the hub started, the form a group's oldest renewal is kept in.
    fn clock(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.started).as_nanos()).unwrap_or(u64::MAX)
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn is_local(&self, channel: &ChannelName) -> bool {
        channel.prefix() == self.prefix
    }

    pub(crate) fn new_channel(self: &Arc<Self>) -> ChannelReceiver {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let name = ChannelName::local(&self.prefix, id);
        let shared = ChannelShared::new(name.clone(), self.config.capacity);
        lock(&self.channels[shard_of(&name, CHANNEL_SHARDS)]).insert(name, shared.clone());
        let owner: Weak<dyn ChannelOwner> = Arc::downgrade(self) as Weak<dyn ChannelOwner>;
        ChannelReceiver::new(shared, owner)
    }

    fn channel(&self, name: &ChannelName) -> Option<Arc<ChannelShared>> {
        lock(&self.channels[shard_of(name, CHANNEL_SHARDS)]).get(name).cloned()
    }

    /// Delivers to a local channel; unknown channels drop the message.
    pub(crate) fn send(&self, name: &ChannelName, message: Message) -> Result<(), LayerError> {
        match self.channel(name).map(|c| c.push(message)) {
            Some(Push::Overflowed) => {
                self.forget_lagging(name);
                Err(LayerError::ChannelFull)
            }
            Some(Push::Refused) => Err(LayerError::ChannelFull),
            Some(Push::Queued) | None => Ok(()),
        }
    }

    pub(crate) fn add(&self, group: &GroupName, name: &ChannelName) -> Result<(), LayerError> {
        let channel = self.channel(name).ok_or_else(|| {
            LayerError::InvalidName(format!("{name} is not a channel of this process"))
        })?;
        let first = {
            let mut groups = lock(&self.groups[shard_of(group, GROUP_SHARDS)]);
            let entry = groups.entry(group.clone()).or_insert_with(|| {
                let group = Group::default();
                group.renewed_since(self.clock(Instant::now()));
                Arc::new(group)
            });
            let mut members = lock(&entry.members);
            members.insert(channel.clone(), Instant::now()) && members.len() == 1
        };
        channel.join(group);
        if first {
            self.notify(MembershipChange::Joined(group.clone()));
        }
        Ok(())
    }

    pub(crate) fn discard(&self, group: &GroupName, name: &ChannelName) {
        if let Some(channel) = self.channel(name) {
            channel.leave(group);
        }
        self.remove_members(group, std::slice::from_ref(name), |_| false);
    }

    /// Removes members (but those `keep` keeps) and drops the group once it has none; holds the
    /// group's shard lock so a concurrent `add` cannot join a group that is being removed.
    fn remove_members(
        &self,
        group: &GroupName,
        names: &[ChannelName],
        keep: impl Fn(&Member) -> bool,
    ) {
        let emptied = {
            let mut groups = lock(&self.groups[shard_of(group, GROUP_SHARDS)]);
            let Some(entry) = groups.get(group) else { return };
            let mut members = lock(&entry.members);
            for name in names {
                members.remove_unless(name, &keep);
            }
            let empty = members.len() == 0;
            drop(members);
            if empty {
                groups.remove(group);
            }
            empty
        };
        if emptied {
            self.notify(MembershipChange::Left(group.clone()));
        }
    }

    fn group(&self, group: &GroupName) -> Option<Arc<Group>> {
        lock(&self.groups[shard_of(group, GROUP_SHARDS)]).get(group).cloned()
    }

    /// Offers the message to every live local member. Holds no lock while it pushes (see
    /// [`Members`]), and each push is a non-blocking queue append, so one slow member cannot
    /// delay the others.
    pub(crate) fn fan_out(&self, group: &GroupName, message: &Message) -> FanOut {
        let Some(entry) = self.group(group) else { return FanOut::default() };
        let members = Arc::clone(&lock(&entry.members).list);
        let now = Instant::now();
        let mut stale = Vec::new();
        let mut result = FanOut::default();
        let mut oldest = now;
        for member in members.iter() {
            let name = &member.channel.name;
            if member.expired(now, self.config.group_expiry) {
                stale.push(name.clone());
                continue;
            }
            match member.channel.push(message.clone()) {
                Push::Queued => {
                    result.delivered += 1;
                    oldest = oldest.min(member.renewed);
                }
                Push::Overflowed => {
                    result.lagged += 1;
                    stale.push(name.clone());
                }
                Push::Refused => stale.push(name.clone()),
            }
        }
        drop(members);
        if !stale.is_empty() {
            // Kept if renewed since it was found expired; a channel that refused stays closed.
            let expiry = self.config.group_expiry;
            self.remove_members(group, &stale, |member| member.is_live(now, expiry));
        }
        // Members that joined meanwhile were renewed later still.
        entry.renewed_since(self.clock(oldest));
        result
    }

    /// Live local members of a group. A channel leaves its groups as it closes or falls
    /// behind, so while no membership can have expired that is every member.
    pub(crate) fn local_size(&self, group: &GroupName) -> usize {
        let Some(entry) = self.group(group) else { return 0 };
        let now = Instant::now();
        let members = lock(&entry.members);
        let since = entry.renewed_since.load(Ordering::Acquire);
        let unexpired = Duration::from_nanos(self.clock(now).saturating_sub(since));
        if unexpired <= self.config.group_expiry {
            return members.len();
        }
        let mut oldest = now;
        let live = members
            .list
            .iter()
            .inspect(|m| oldest = oldest.min(m.renewed))
            .filter(|m| m.is_live(now, self.config.group_expiry))
            .count();
        entry.renewed_since(self.clock(oldest));
        live
    }

    pub(crate) fn local_groups(&self) -> Vec<(GroupName, usize)> {
        let names: Vec<GroupName> = self
            .groups
            .iter()
            .flat_map(|shard| lock(shard).keys().cloned().collect::<Vec<_>>())
            .collect();
        names
            .into_iter()
            .map(|g| {
                let size = self.local_size(&g);
                (g, size)
            })
            .filter(|(_, size)| *size > 0)
            .collect()
    }

    /// Tells every open channel that messages may have been lost.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn interrupt_all(&self) {
        for shard in &self.channels {
            for channel in lock(shard).values() {
                channel.interrupt();
            }
        }
    }

    pub(crate) fn close_all(&self) {
        let all: Vec<Arc<ChannelShared>> = self
            .channels
            .iter()
            .flat_map(|s| lock(s).values().cloned().collect::<Vec<_>>())
            .collect();
        for channel in all {
            channel.close();
            self.release(&channel);
        }
    }

    fn forget_lagging(&self, name: &ChannelName) {
        if let Some(channel) = self.channel(name) {
            let groups = std::mem::take(&mut *lock(&channel.groups));
            for group in groups {
                self.remove_members(&group, std::slice::from_ref(name), |_| false);
            }
        }
    }

    fn notify(&self, change: MembershipChange) {
        if let Some(watcher) = &self.watcher {
            let _ = watcher.send(change);
        }
    }
}

impl ChannelOwner for Hub {
    fn release(&self, channel: &ChannelShared) {
        lock(&self.channels[shard_of(&channel.name, CHANNEL_SHARDS)]).remove(&channel.name);
        let groups = std::mem::take(&mut *lock(&channel.groups));
        for group in groups {
            self.remove_members(&group, std::slice::from_ref(&channel.name), |_| false);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A receiving task that runs `then` when it is first woken, from inside the push.
    struct OnWake(Mutex<Option<Box<dyn FnOnce() + Send>>>);

    impl OnWake {
        /// Registers the task with `receiver`, as a receiver waiting for its next message does.
        fn waiting_on(receiver: &mut ChannelReceiver, then: impl FnOnce() + Send + 'static) {
            use std::future::Future;
            use std::task::{Context, Waker};

            let waker = Waker::from(Arc::new(OnWake(Mutex::new(Some(Box::new(then))))));
            let mut recv = Box::pin(receiver.recv());
            assert!(recv.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
        }
    }

    impl std::task::Wake for OnWake {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            let then = lock(&self.0).take();
            if let Some(then) = then {
                then();
            }
        }
    }

    #[test]
    fn streams_join_and_leave_a_group_while_a_fan_out_to_it_is_pushing() {
        let hub = Hub::new(LayerConfig::default(), "t".into(), None);
        let g = GroupName::new("g").unwrap();
        let (mut woken, leaving, joining) =
            (hub.new_channel(), hub.new_channel(), hub.new_channel());
        hub.add(&g, woken.name()).unwrap();
        hub.add(&g, leaving.name()).unwrap();
        // The woken task has another thread join and leave the group and waits for it, as a
        // worker thread accepting or dropping a stream while the fan-out runs would.
        let finished = Arc::new(Mutex::new(None));
        let (hub2, g2, finished2) = (hub.clone(), g.clone(), finished.clone());
        let (joining_name, leaving_name) = (joining.name().clone(), leaving.name().clone());
        OnWake::waiting_on(&mut woken, move || {
            let (done, joined) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                hub2.add(&g2, &joining_name).unwrap();
                hub2.discard(&g2, &leaving_name);
                let _ = done.send(());
            });
            // Only a join that waits for the fan-out to end (a deadlock, here) takes this long.
            *lock(&finished2) = Some(joined.recv_timeout(Duration::from_secs(20)).is_ok());
        });

        let sent = hub.fan_out(&g, &Message::from_static(b"x"));
        assert_eq!(*lock(&finished), Some(true), "the join and the leave waited for the fan-out");
        assert_eq!(sent.delivered, 2, "the fan-out reached the members it started with");
        assert_eq!(hub.local_size(&g), 2);
        assert_eq!(hub.fan_out(&g, &Message::from_static(b"y")).delivered, 2);
        drop(joining);
        assert_eq!(hub.local_size(&g), 1);
    }

    /// Checks that a group's index and list describe the same members.
    fn assert_consistent(hub: &Hub, group: &GroupName) {
        let Some(entry) = hub.group(group) else { return };
        let members = lock(&entry.members);
        assert_eq!(members.index.len(), members.list.len());
        for (name, &at) in &members.index {
            assert_eq!(&members.list[at].channel.name, name);
        }
    }

    #[test]
    fn joins_leaves_and_fan_outs_from_many_threads_leave_exactly_the_last_joined_as_members() {
        const FAN_OUTS: usize = 5_000;
        let config = LayerConfig { capacity: FAN_OUTS + 1, ..LayerConfig::default() };
        let hub = Hub::new(config, "t".into(), None);
        let g = GroupName::new("g").unwrap();
        let channels: Vec<ChannelReceiver> = (0..64).map(|_| hub.new_channel()).collect();
        let names: Vec<ChannelName> = channels.iter().map(|c| c.name().clone()).collect();
        let start = Arc::new(std::sync::Barrier::new(5));
        let changers: Vec<_> = names
            .chunks(16)
            .enumerate()
            .map(|(seed, mine)| {
                let (hub, g, start, mine) = (hub.clone(), g.clone(), start.clone(), mine.to_vec());
                std::thread::spawn(move || {
                    // A fixed sequence per thread (an LCG), so a failure can be replayed.
                    let mut state = seed as u64 + 1;
                    let mut joined = vec![false; mine.len()];
                    start.wait();
                    for _ in 0..4_000 {
                        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                        let which = (state >> 33) as usize % mine.len();
                        if (state >> 32) & 1 == 1 {
                            hub.add(&g, &mine[which]).unwrap();
                            joined[which] = true;
                        } else {
                            hub.discard(&g, &mine[which]);
                            joined[which] = false;
                        }
                    }
                    joined.iter().filter(|&&j| j).count()
                })
            })
            .collect();
        let fan_outs = {
            let (hub, g, start) = (hub.clone(), g.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..FAN_OUTS {
                    assert_eq!(hub.fan_out(&g, &Message::from_static(b"x")).lagged, 0);
                }
            })
        };
        let joined: usize = changers.into_iter().map(|t| t.join().unwrap()).sum();
        fan_outs.join().unwrap();

        assert_consistent(&hub, &g);
        assert_eq!(hub.local_size(&g), joined);
        assert_eq!(hub.fan_out(&g, &Message::from_static(b"y")).delivered, joined);
        drop(channels);
        assert_eq!(hub.local_size(&g), 0);
    }

    /// Memberships expire after this: long enough that a member renewed just before a count or
    /// a fan-out is not expired in it, even on a busy machine.
    const EXPIRY: Duration = Duration::from_millis(500);

    /// A hub whose memberships expire after [`EXPIRY`], with two members in group `g`.
    fn hub_with_two_members() -> (Arc<Hub>, GroupName, ChannelReceiver, ChannelReceiver) {
        let config = LayerConfig { group_expiry: EXPIRY, ..LayerConfig::default() };
        let hub = Hub::new(config, "t".into(), None);
        let g = GroupName::new("g").unwrap();
        let (first, second) = (hub.new_channel(), hub.new_channel());
        hub.add(&g, first.name()).unwrap();
        hub.add(&g, second.name()).unwrap();
        (hub, g, first, second)
    }

    #[test]
    fn a_membership_renewed_during_the_fan_out_that_found_it_expired_is_kept() {
        let (hub, g, mut first, renewed) = hub_with_two_members();
        let expiry = EXPIRY;
        // Expiry is about time passing: nothing else to wait on.
        std::thread::sleep(expiry + Duration::from_millis(50));
        hub.add(&g, first.name()).unwrap();
        // Pushing to `first` renews `renewed`, which comes after it in the list the fan-out took.
        let (hub2, g2, name) = (hub.clone(), g.clone(), renewed.name().clone());
        OnWake::waiting_on(&mut first, move || hub2.add(&g2, &name).unwrap());

        assert_eq!(hub.fan_out(&g, &Message::from_static(b"x")).delivered, 1);
        assert_eq!(hub.local_size(&g), 2, "the renewal stands");
        assert_eq!(hub.fan_out(&g, &Message::from_static(b"y")).delivered, 2);
    }

    #[test]
    fn a_group_counts_its_members_and_stops_counting_expired_ones() {
        // `_old` stays open: it leaves the count by expiring, not by closing.
        let (hub, g, _old, kept) = hub_with_two_members();
        let expiry = EXPIRY;
        assert_eq!(hub.local_size(&g), 2);

        // Expiry is about time passing: nothing else to wait on.
        std::thread::sleep(expiry + Duration::from_millis(50));
        hub.add(&g, kept.name()).unwrap();
        // `_old` was last renewed more than the expiry ago: no longer counted, though still listed.
        assert_eq!(hub.local_size(&g), 1);
        assert_eq!(hub.local_size(&g), 1, "the oldest renewal seen keeps the next count a walk");

        // A fan-out drops the expired member; the count is exact without a walk again, and a
        // member that joins is counted at once.
        assert_eq!(hub.fan_out(&g, &Message::from_static(b"x")).delivered, 1);
        let late = hub.new_channel();
        hub.add(&g, late.name()).unwrap();
        assert_eq!(hub.local_size(&g), 2);
        drop(late);
        assert_eq!(hub.local_size(&g), 1, "a dropped receiver leaves at once");
    }
}

/*
 * minimal_host.c: the smallest complete embedding of sync_protocol.
 *
 * Two devices in one process: a leader and a follower of one library,
 * joined by the in-memory transport.  A real host swaps in its own store
 * (or sqlite_store.h), its device registry and the QUIC transport (quic.h);
 * the shape of the program stays the same.
 *
 * Build:  cc minimal_host.c $(pkg-config --cflags --libs sync_protocol)
 */
#include <stdio.h>
#include <string.h>

#include <sync_protocol/sync_protocol.h>

/* 1. The device registry: who belongs to the library, who leads it.  Here
 *    two fixed devices; a host would ask its own database. */
static sp_uuid library, leader_id, follower_id;

static int is_member(const sp_uuid *lib, const sp_uuid *device, int *member,
                     void *user_data) {
  (void)user_data;
  *member = sp_uuid_equal(lib, &library) &&
            (sp_uuid_equal(device, &leader_id) ||
             sp_uuid_equal(device, &follower_id));
  return 0;
}

static int leader_of(const sp_uuid *lib, sp_uuid *leader, void *user_data) {
  (void)user_data;
  if (!sp_uuid_equal(lib, &library)) {
    return SP_ERR_NOT_FOUND;
  }
  *leader = leader_id;
  return 0;
}

static int members(const sp_uuid *lib, sp_uuid *out, size_t cap,
                   size_t *count, void *user_data) {
  (void)lib;
  (void)user_data;
  *count = 2;
  if (cap >= 2) {
    out[0] = leader_id;
    out[1] = follower_id;
  }
  return 0;
}

/* 2. Events: the library tells the host what happened. */
static int on_event(const sp_event *ev, void *user_data) {
  const char *who = user_data;

  if (ev->type == SP_EVENT_ENTRIES_APPLIED) {
    printf("%s: applied entries (%llu, %llu]\n", who,
           (unsigned long long)ev->from_sequence,
           (unsigned long long)ev->to_sequence);
  } else if (ev->type == SP_EVENT_ACK_RECEIVED && ev->progress) {
    printf("%s: follower acknowledged %llu\n", who,
           (unsigned long long)ev->progress->acked_sequence);
  }
  return 0;
}

/* 3. One node per device, on the in-memory network. */
static sp_node *make_node(sp_mem_net *net, const sp_uuid *id,
                          const char *name) {
  sp_registry reg = SP_REGISTRY_INIT;
  sp_events ev = SP_EVENTS_INIT;
  sp_node_config cfg;
  sp_transport tr;
  sp_node *node = NULL;

  reg.is_member = is_member;
  reg.leader = leader_of;
  reg.members = members;
  /* No may_lead and no node identity here: only the device leader_of
   * names may lead, and no frame can depose it.  A host with failover
   * gives each node its key (cfg.identity, identity.h) and the registry
   * device_key and may_lead (docs/integration.md, leadership claims). */
  ev.on_event = on_event;
  ev.user_data = (void *)name;
  sp_node_config_default(&cfg);
  cfg.device_id = *id;
  if (sp_mem_net_add_device(net, id, &tr) != 0 ||
      sp_node_new(&node, &cfg, &reg, &ev, &tr, NULL) != 0 ||
      sp_mem_net_attach(net, id, node) != 0) {
    return NULL;
  }
  return node;
}

/* 4. The host's loop: deliver what is due, run the timers, advance the
 *    clock.  The library never reads a clock: time is ours to give. */
static void run(sp_mem_net *net, sp_node *a, sp_node *b, sp_tstamp *now,
                sp_duration span) {
  sp_tstamp end = *now + span;

  for (;;) {
    sp_tstamp next = sp_mem_net_get_expiry(net);
    if (sp_node_get_expiry(a) < next) next = sp_node_get_expiry(a);
    if (sp_node_get_expiry(b) < next) next = sp_node_get_expiry(b);
    if (next > end) break;
    if (next > *now) *now = next;
    sp_mem_net_run(net, *now);
    sp_node_handle_expiry(a, *now);
    sp_node_handle_expiry(b, *now);
  }
  *now = end;
}

int main(void) {
  sp_mem_store *leader_log, *follower_log;
  sp_handler *leader, *follower;
  sp_handler_config cfg;
  sp_store store;
  sp_mem_net *net;
  sp_node *a, *b;
  sp_tstamp now = 0;
  sp_store_state st;
  int i, ok;

  sp_uuid_generate(&library);
  sp_uuid_generate(&leader_id);
  sp_uuid_generate(&follower_id);
  if (sp_mem_net_new(&net, NULL, NULL) != 0 ||
      !(a = make_node(net, &leader_id, "leader")) ||
      !(b = make_node(net, &follower_id, "follower")) ||
      sp_mem_store_new(&leader_log, NULL) != 0 ||
      sp_mem_store_new(&follower_log, NULL) != 0) {
    fprintf(stderr, "setup failed\n");
    return 1;
  }

  /* 5. One handler per library and device: the leader serves its log, the
   *    follower connects to the leader the registry names. */
  sp_handler_config_default(&cfg);
  cfg.library_id = library;
  cfg.role = SP_ROLE_LEADER;
  sp_mem_store_get_vtable(leader_log, &store);
  if (sp_handler_new(&leader, a, &cfg, &store, now) != 0) return 1;
  cfg.role = SP_ROLE_FOLLOWER;
  sp_mem_store_get_vtable(follower_log, &store);
  if (sp_handler_new(&follower, b, &cfg, &store, now) != 0) return 1;
  run(net, a, b, &now, SP_SECONDS);

  /* 6. The host appends to its log and tells the leader: followers hear
   *    about it at once, fetch, apply and acknowledge. */
  for (i = 1; i <= 3; ++i) {
    char text[32];
    sp_entry e;
    sp_seq seq;
    memset(&e, 0, sizeof(e));
    snprintf(text, sizeof(text), "photo-%d.jpg", i);
    e.timestamp_ms = 1700000000000ULL + (uint64_t)i;
    e.model_type = "file_path";
    e.model_type_len = strlen(e.model_type);
    e.change_type = SP_CHANGE_INSERT;
    e.data = (const uint8_t *)text;
    e.data_len = strlen(text);
    sp_mem_store_append(leader_log, &e, &seq);
    sp_handler_notify_new_entries(leader, seq, seq, now);
    run(net, a, b, &now, 10 * SP_MILLISECONDS);
  }

  store.state(&st, store.user_data);
  ok = st.applied == 3;
  printf("follower applied %llu of 3 entries: %s\n",
         (unsigned long long)st.applied, ok ? "in sync" : "NOT in sync");

  /* 7. Tear down: handlers and nodes first, then what they used. */
  sp_handler_del(follower);
  sp_handler_del(leader);
  sp_node_del(b);
  sp_node_del(a);
  sp_mem_net_del(net);
  sp_mem_store_del(follower_log);
  sp_mem_store_del(leader_log);
  return ok ? 0 : 1;
}

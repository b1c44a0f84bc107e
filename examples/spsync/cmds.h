/*
 * cmds.h: the spsync subcommands.  Each takes argc/argv starting at the
 * subcommand's name and returns the process exit status.
 */
#ifndef SPSYNC_CMDS_H
#define SPSYNC_CMDS_H

int cmd_keygen(int argc, char **argv);
int cmd_fingerprint(int argc, char **argv);
int cmd_leader(int argc, char **argv);
int cmd_follower(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_prune(int argc, char **argv);
int cmd_pair(int argc, char **argv);

/* Exit statuses shared by the commands. */
#define EXIT_USAGE 2
#define EXIT_SYNC_REQUIRED 3
#define EXIT_TIMEOUT 4
/* spsync leader: a newer leader proved its epoch (docs/pairing.md). */
#define EXIT_STEPPED_DOWN 5

/* Print "spsync: <cmd>: <what> (see spsync <cmd> --help)" to standard
 * error; returns EXIT_USAGE. */
int usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The same for what getopt_long returned for a bad option ('?': unknown,
 * ':': its argument missing; the option string starts with ':'). */
int opt_error(const char *cmd, int c, char **argv);

/* Parse a non-negative integer option value; -1 if it is not one. */
long long parse_count(const char *s);

#endif

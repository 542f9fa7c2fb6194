/* runtime/cli.h: the runtime's command-line tools, dispatched by bin/moonspace.
 * Each takes the subcommand's argv (argv[0] is the subcommand name), writes results to
 * stdout and diagnostics to stderr, supports --help, and returns the process exit code. */
#ifndef MS_RUNTIME_CLI_H
#define MS_RUNTIME_CLI_H

int ms_cli_generate(int argc, char **argv);      /* generate MODEL [-p PROMPT] [-n N] [-t TEMP] ... */
int ms_cli_tokenize(int argc, char **argv);      /* tokenize MODEL TEXT [--no-special] [--decode] */
int ms_cli_embed(int argc, char **argv);         /* embed MODEL TEXT */
int ms_cli_classify(int argc, char **argv);      /* classify MODEL TEXT */
int ms_cli_chat_template(int argc, char **argv); /* chat-template MODEL --messages FILE [--add-generation-prompt] */

#endif

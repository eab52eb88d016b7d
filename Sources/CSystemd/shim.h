// CODE_FILE/CODE_LINE of this shim would say nothing useful about a character's line.
#define SD_JOURNAL_SUPPRESS_LOCATION 1
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>
#include <sys/uio.h>

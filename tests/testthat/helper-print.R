# Printed output in snapshots: wall-clock seconds vary from run to run, so
# they are replaced by a placeholder.
scrub_times <- function(lines) gsub("(< )?[0-9]+\\.[0-9]+ s\\b", "<t> s", lines)

# The widest line of what `code` prints.
widest_line <- function(code) max(nchar(utils::capture.output(code)))

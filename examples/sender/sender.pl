#!/usr/bin/perl
# nps_billing reference sender: leases due surveys with claim_surveys(), "sends" each one by
# appending a line to <outbox>/<channel>.tsv, and reports the batch back with one mark_sent call
# (and one mark_failed call per distinct error). Replace send_one() with your e-mail / in-app /
# SMS call; keep the rest.
#
#   sender.pl [--once] [--worker NAME] [--batch N] [--lease INTERVAL] [--outbox DIR]
#             [--poll SECONDS] [--retry-after INTERVAL] [--fail-channel CHANNEL]
#
#   --once          drain what is due, then exit (for cron, tests)
#   --worker        lease owner name, unique per process (default sender-<host>-<pid>)
#   --batch         surveys per claim (default 100)     --lease   lease length (default '5 minutes')
#   --poll          without --once: after draining, wait for NOTIFY nps_billing_survey at most this
#                   many seconds before claiming again (retries become due without a NOTIFY)
#   --retry-after   delay before a failed survey is tried again (default '15 minutes')
#   --fail-channel  simulate a provider outage for one channel (mark_failed instead of sending)
#
# Every value reaches the server as a bind parameter (DBD::Pg, libdbd-pg-perl on Debian): the
# statement text is constant, so survey ids, worker names and error texts never appear in a
# statement that log_min_error_statement or log_statement writes to the server log.
# Connection: the usual libpq environment (PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD or
# ~/.pgpass). The role needs only the sender grants of the Privacy role recipes.
# Delivery is at-least-once: a sender that dies after sending but before reporting has its lease
# run out, and the survey is sent again by another sender (attempts shows it).
use strict;
use warnings;
use DBI;
use Getopt::Long qw(:config no_ignore_case);
use IO::Select;
use POSIX qw(strftime);
use Sys::Hostname;

my %o = (worker => 'sender-' . hostname() . "-$$", batch => 100, lease => '5 minutes',
         outbox => './outbox', poll => 60, 'retry-after' => '15 minutes', 'fail-channel' => '');
GetOptions(\%o, 'once', 'worker=s', 'batch=s', 'lease=s', 'outbox=s', 'poll=i', 'retry-after=s',
           'fail-channel=s', 'help|h') or exit 2;
if ($o{help}) { open my $me, '<', $0; while (<$me>) { last if $. > 17; print if $. > 1 } exit 0 }
die "sender.pl: --batch must be a non-negative integer\n" unless $o{batch} =~ /^[0-9]+$/;
mkdir $o{outbox} unless -d $o{outbox};

my $stop = 0;
$SIG{INT} = $SIG{TERM} = sub { $stop = 1 };   # stop after the current batch; a wait is cut short

# "Send" one survey. Return an error text to report a failure (it goes to mark_failed), or undef.
sub send_one {
  my ($s) = @_;   # id token customer_id channel attempts source kind amount currency
  return "simulated $s->{channel} provider outage" if $s->{channel} eq $o{'fail-channel'};
  open my $fh, '>>', "$o{outbox}/$s->{channel}.tsv" or return "outbox: $!";
  print $fh join("\t", strftime('%Y-%m-%dT%H:%M:%SZ', gmtime), $o{worker}, $s->{id},
                 $s->{customer_id} // '', "https://nps.example.com/r/$s->{token}",
                 map { $_ // '' } @$s{qw(source amount currency)}), "\n";
  close $fh or return "outbox: $!";
  return undef;
}

my ($dbh, $claim, $sent, $failed);
sub connect_db {
  $dbh = DBI->connect('dbi:Pg:', undef, undef, {AutoCommit => 1, RaiseError => 0, PrintError => 0})
    or return 0;
  # Constant statements, server-side prepared once per connection.
  $claim = $dbh->prepare('SELECT id, token, customer_id, channel, attempts, source, kind, amount, currency
                            FROM nps_billing.claim_surveys($1, $2::integer, $3::interval)');
  $sent = $dbh->prepare('SELECT survey_id, ok FROM nps_billing.mark_sent($1::bigint[], $2)');
  $failed = $dbh->prepare('SELECT survey_id, ok FROM nps_billing.mark_failed($1::bigint[], $2, $3, $4::interval)');
  return 1;
}

sub report {
  my ($sth, @args) = @_;
  if (!$sth->execute(@args)) { warn "sender.pl: report failed: " . $dbh->errstr . "\n"; return }
  while (my ($id, $ok) = $sth->fetchrow_array) {
    warn "sender.pl: survey $id was not reported: its lease is no longer ours\n" unless $ok;
  }
}

# One batch: claim, send each, report. Returns the number of surveys claimed, -1 on failure.
sub one_batch {
  if (!$claim->execute($o{worker}, $o{batch}, $o{lease})) {
    warn "sender.pl: claim failed: " . $dbh->errstr . "\n";
    return -1;
  }
  my $rows = $claim->fetchall_arrayref({});
  my (@ok, %bad);
  for my $s (@$rows) {
    my $err = send_one($s);
    if (defined $err) { push @{$bad{$err}}, $s->{id} } else { push @ok, $s->{id} }
  }
  report($sent, \@ok, $o{worker}) if @ok;
  report($failed, $bad{$_}, $o{worker}, $_, $o{'retry-after'}) for sort keys %bad;
  return scalar @$rows;
}

sub wait_for_work {
  $dbh->do('LISTEN nps_billing_survey') or return;
  my $sel = IO::Select->new($dbh->{pg_socket});
  my $until = time + $o{poll};
  while (!$stop && time < $until) {
    last if $dbh->pg_notifies;
    $sel->can_read($until - time);   # returns early on a notification or a signal
    last if $dbh->pg_notifies;
  }
  1 while $dbh->pg_notifies;
}

while (!$stop) {
  if (!$dbh || !$dbh->ping) {
    if (!connect_db()) {
      warn "sender.pl: cannot connect: $DBI::errstr\n";
      exit 1 if $o{once};
      sleep $o{poll};
      next;
    }
  }
  my $n = 1;
  $n = one_batch() while !$stop && $n > 0;
  if ($n < 0) {
    exit 1 if $o{once};
    warn "sender.pl: retrying in $o{poll} s\n";
    sleep $o{poll};
    next;
  }
  last if $o{once};
  wait_for_work() unless $stop;
}
$dbh->disconnect if $dbh;

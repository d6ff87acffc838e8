#!/usr/bin/env python3
"""Checks the emails an SMTP sink received against the surveys that were sent.

  check_mail.py DIR EXPECTED DOMAIN LINKS_OUT

EXPECTED: lines "token<TAB>recipient". Each received message is parsed with Python's email package
(the real message as it arrived): To, From, Date, Subject, Message-ID (derived from the token),
List-Unsubscribe (+ One-Click), multipart/alternative with a text/plain and a text/html part,
eleven score links in each and the unsubscribe link. Prints TAP-style ok / not ok lines and writes
"recipient<TAB>score link 7<TAB>unsubscribe link" per message to LINKS_OUT.
"""
import email
import email.policy
import email.utils
import glob
import hashlib
import re
import sys

d, expected_file, domain, links_out = sys.argv[1:5]
expected = {}
for line in open(expected_file):
    if line.strip():
        tok, rcpt = line.rstrip('\n').split('\t')
        expected[tok] = rcpt
files = sorted(glob.glob(d + '/*.eml'))
problems, links, seen = [], [], {}
for f in files:
    msg = email.message_from_binary_file(open(f, 'rb'), policy=email.policy.default)
    mid = str(msg.get('Message-ID', ''))
    tok = next((t for t in expected
                if mid == '<nps.%s@%s>' % (hashlib.sha256(('nps_billing:' + t).encode()).hexdigest()[:32], domain)), None)
    if tok is None:
        problems.append('%s: Message-ID %r is not derived from any expected token' % (f, mid))
        continue
    seen[tok] = seen.get(tok, 0) + 1
    to = msg.get('To', '')
    if expected[tok] not in str(to):
        problems.append('%s: To is not the survey recipient' % f)
    if not msg.get('From') or not msg.get('Subject'):
        problems.append('%s: From or Subject missing' % f)
    try:
        email.utils.parsedate_to_datetime(str(msg['Date']))
    except Exception:
        problems.append('%s: Date missing or not RFC 5322' % f)
    lu = str(msg.get('List-Unsubscribe', ''))
    if ('/u/' + tok + '>') not in lu:
        problems.append('%s: List-Unsubscribe has no unsubscribe link of the survey' % f)
    if str(msg.get('List-Unsubscribe-Post', '')) != 'List-Unsubscribe=One-Click':
        problems.append('%s: List-Unsubscribe-Post missing' % f)
    text = msg.get_body(preferencelist=('plain',))
    html = msg.get_body(preferencelist=('html',))
    if text is None or html is None:
        problems.append('%s: not multipart/alternative with text and html' % f)
        continue
    t, h = text.get_content(), html.get_content()
    tl = re.findall(r'(https?://\S+/%s/(\d+))' % re.escape(tok), t)
    hl = re.findall(r'href="(https?://[^"]+/%s/(\d+))"' % re.escape(tok), h)
    if sorted(int(s) for _, s in tl) != list(range(11)) or sorted(int(s) for _, s in hl) != list(range(11)):
        problems.append('%s: the text and html bodies do not both carry the eleven score links' % f)
        continue
    unsub = re.findall(r'(https?://\S+/u/%s)(?=\s|$)' % re.escape(tok), t)
    if not unsub:
        problems.append('%s: no unsubscribe link in the text body' % f)
        continue
    links.append('%s\t%s\t%s' % (expected[tok], dict((s, u) for u, s in tl)['7'], unsub[0]))
with open(links_out, 'w') as out:
    out.write(''.join(l + '\n' for l in links))
missing = [t for t in expected if t not in seen]
dup = [t for t, n in seen.items() if n > 1]
if problems or missing or dup:
    for p in problems[:10]:
        print('# ' + p)
    print('not ok - email: %d messages for %d surveys (%d missing, %d duplicated, %d malformed)'
          % (len(files), len(expected), len(missing), len(dup), len(problems)))
    sys.exit(1)
print('ok - email: %d real messages over SMTP, one per survey: To, Date, Message-ID from the token, '
      'List-Unsubscribe + One-Click, text and html bodies with 11 score links and the unsubscribe link' % len(files))

// The contact data a survey keeps (recipient, locale, time zone), cleaned as capture stores it
// (src/render.cpp). Each returns a palloc'd string, or NULL when the value is not usable: the
// payment never fails for it, the survey just has no such value.
#pragma once

#include "pg_boundary.hpp"

namespace nps {
namespace contact {

// Surrounding blanks removed; NULL when empty, longer than 320 bytes or holding a control
// character (a line break could inject a mail header).
char *clean_recipient(const char *in);
// BCP 47 case ("pt_BR" -> "pt-BR"); NULL when not a language tag.
char *clean_locale(const char *in);
// A time zone SET TIME ZONE accepts by name, under its canonical name; NULL otherwise.
char *clean_time_zone(const char *in);

}  // namespace contact
}  // namespace nps

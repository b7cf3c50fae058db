/*
 * pathguard.c - see pathguard.h.
 */
#include "pathguard.h"

#include <strings.h>

bool tg_adm_path_has_dot_segment(const char *raw, size_t len)
{
    size_t i = 0;
    while (i < len && raw[i] != '?') {
        /* one segment: [i, end) */
        size_t end = i;
        while (end < len && raw[end] != '/' && raw[end] != '?')
            end++;
        size_t dots = 0;
        bool only_dots = end > i;
        for (size_t k = i; k < end && only_dots;) {
            if (raw[k] == '.') {
                dots++;
                k++;
            } else if (end - k >= 3 && strncasecmp(raw + k, "%2e", 3) == 0) {
                dots++;
                k += 3;
            } else {
                only_dots = false;
            }
        }
        if (only_dots && dots >= 1 && dots <= 2)
            return true;
        i = end < len && raw[end] == '/' ? end + 1 : end;
    }
    return false;
}

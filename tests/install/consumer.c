/* consumer.c - a program built against an installed libcrdt, as a user would */
#include <crdt.h>
#include <crdt_json.h>
#include <stdio.h>

int main(void)
{
    crdt_obj_t *t = crdt_timeline_new(10);
    if (!t || crdt_timeline_add(t, "m", 1, 1.0, NULL) != 1)
        return 1;
    json_t *j = crdt_obj_to_json(t);
    int ok = j && crdt_timeline_card(t) == 1;
    json_decref(j);
    crdt_obj_free(t);
    puts(ok ? "consumer ok" : "consumer FAILED");
    return ok ? 0 : 1;
}

"""Poll a slice's map from the broker until a stop file appears.

  map_poll.py CLIENT_DIR ENDPOINT SLICE OUT STOPFILE

Each answer is one line in OUT: "<t_ms> map <epoch> <members> <up> <down>
<out> <left> <ids sorted, comma-separated fingerprints>", or "<t_ms> err
<reason>" when the broker does not answer (restarting). Every map's
signature is checked with the broker key of CLIENT_DIR.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shelf_client as sc  # noqa: E402
import zmq  # noqa: E402


def main():
    d, ep, name, out, stop = sys.argv[1:6]
    c = sc.Client.from_dir(d, ep)
    with open(out, "a") as f:
        while not os.path.exists(stop):
            t = int(time.time() * 1000)
            try:
                m = sc.map_get(ep, c.broker_curve_pk, c.ident, name, timeout_ms=300)
                sc.verify_map(m, c.broker_cert.sign)
                st = [x["state"] for x in m["members"]]
                ids = ",".join(sorted(sc.fingerprint(x["id"]) for x in m["members"]))
                f.write(f"{t} map {m['epoch']} {len(st)} {st.count('up')} {st.count('down')} "
                        f"{st.count('out')} {len(m.get('left') or [])} {ids}\n")
            except (sc.ShelfError, zmq.ZMQError) as e:
                f.write(f"{t} err {str(e).replace(' ', '_')}\n")
                time.sleep(0.02)
            f.flush()


main()

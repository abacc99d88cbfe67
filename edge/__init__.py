"""The edge side: everything that runs on the device. Never imports torch or host.

engine/    run a deployed model: numpy, native C and the `.pranc` stream rebuild
line/      the daemon on the line: frame sources, box decisions, actuators, GPIO, status
           page, capture ring, its config (edge.toml) and systemd unit
install/   the model store (slots, verify, activate, trial, rollback) and the receiver
portable/  the MicroPython set: portable engine, classify and receive (manifest.txt)
imaging/   image data shared with the host: preprocessing, image folders, box rendering
cli.py     `binsort-edge`
"""

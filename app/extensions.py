from flask_smorest import Api
from flask_sock import Sock

api = Api()
sock = Sock()
